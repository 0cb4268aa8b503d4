//! The buffer protocol, declared by hand.
//!
//! `PyObject_GetBuffer` and `Py_buffer` joined the limited API only in Python 3.11,
//! so `PyO3`'s `abi3-py39` build does not declare them. Every `CPython` 3.x exports the
//! function, and the struct's layout has not changed since 3.3 (3.11 froze it as
//! part of the stable ABI), so declaring them here keeps one abi3 wheel for 3.9+.

use std::ffi::{c_char, c_int, c_void};

use pyo3::ffi::{Py_ssize_t, PyObject};

#[repr(C)]
struct RawBuffer {
    buf: *mut c_void,
    obj: *mut PyObject,
    len: Py_ssize_t,
    itemsize: Py_ssize_t,
    readonly: c_int,
    ndim: c_int,
    format: *mut c_char,
    shape: *mut Py_ssize_t,
    strides: *mut Py_ssize_t,
    suboffsets: *mut Py_ssize_t,
    internal: *mut c_void,
}

unsafe extern "C" {
    fn PyObject_GetBuffer(obj: *mut PyObject, view: *mut RawBuffer, flags: c_int) -> c_int;
    fn PyBuffer_Release(view: *mut RawBuffer);
}

/// `PyBUF_ND | PyBUF_STRIDES | PyBUF_C_CONTIGUOUS`: a C-contiguous view.
const PYBUF_C_CONTIGUOUS: c_int = 0x0038;

/// A held buffer export; released on drop. Only create and drop it with the GIL held.
pub(crate) struct HeldBuffer {
    raw: RawBuffer,
}

impl HeldBuffer {
    /// Asks `obj` for a C-contiguous view; `None` if it has no buffer or is not
    /// contiguous (the Python error is cleared).
    ///
    /// # Safety
    /// The GIL must be held and `obj` must be a valid object pointer.
    pub(crate) unsafe fn get(obj: *mut PyObject) -> Option<Self> {
        let mut raw = std::mem::MaybeUninit::<RawBuffer>::zeroed();
        // SAFETY: the caller holds the GIL; `raw` is writable storage of the right size.
        let rc = unsafe { PyObject_GetBuffer(obj, raw.as_mut_ptr(), PYBUF_C_CONTIGUOUS) };
        if rc != 0 {
            // SAFETY: GIL held; clears the error PyObject_GetBuffer set.
            unsafe { pyo3::ffi::PyErr_Clear() };
            return None;
        }
        // SAFETY: PyObject_GetBuffer succeeded and filled the struct.
        let raw = unsafe { raw.assume_init() };
        Some(Self { raw })
    }

    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.raw.buf.cast::<u8>().cast_const()
    }

    pub(crate) fn len(&self) -> usize {
        self.raw.len as usize
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        if self.raw.len == 0 {
            return &[];
        }
        // SAFETY: the exporter guarantees `len` readable bytes at `buf` while the view
        // is held, and it is held until `self` drops.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }
}

impl Drop for HeldBuffer {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful PyObject_GetBuffer and callers
        // hold the GIL whenever a HeldBuffer exists.
        unsafe { PyBuffer_Release(&raw mut self.raw) };
    }
}
