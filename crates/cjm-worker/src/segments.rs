//! Shared-memory segments mapped into Python as `mmap` objects.
//!
//! A segment the host lends arrives as a read-only `mmap`; a buffer the plugin asks
//! for (`cjm_worker.shm_alloc`) is a writable `mmap` over a segment this worker owns.
//! The [`Registry`] remembers each mapping's address range, so the encoder can send
//! a buffer that lies inside one as a reference instead of bytes, and a weak
//! reference on each `mmap` tells the host (`Release`) when the last Python view of
//! its segment is gone.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cjm_proto::{Message, Segment, SegmentId, Side};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyDict, PyTuple};

use crate::pybuffer::HeldBuffer;
use crate::runtime::{Runtime, runtime};

/// Where a buffer about to be sent already lives.
pub(crate) enum Located {
    /// In a segment this worker owns, at an offset.
    Own(Arc<Segment>, usize),
    /// In a segment the host lent us, at an offset.
    Host(SegmentId, usize),
}

/// One segment mapped into Python.
struct Entry {
    id: SegmentId,
    /// The mapping's address and length, to recognise buffers inside it.
    base: usize,
    len: usize,
    /// A weak reference to the `mmap`, whose callback calls [`Registry::gone`].
    weak: Py<PyAny>,
    /// The segment, when this worker owns it; `None` for one the host lent.
    own: Option<Arc<Segment>>,
    /// How many times the host sent this segment; returned in `Release`.
    receipts: u32,
}

/// Shared-memory segments that are mapped as Python `mmap` objects in this process.
#[derive(Default)]
pub(crate) struct Registry {
    entries: Mutex<Vec<Entry>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn locate(&self, ptr: usize, len: usize) -> Option<Located> {
        let entries = self.lock();
        let e = entries.iter().find(|e| {
            ptr >= e.base
                && ptr
                    .checked_add(len)
                    .is_some_and(|end| end <= e.base + e.len)
        })?;
        let offset = ptr - e.base;
        Some(match &e.own {
            Some(seg) => Located::Own(Arc::clone(seg), offset),
            None => Located::Host(e.id, offset),
        })
    }

    /// The Python `mmap` for segment `id`, mapping it from `fd` if needed.
    pub(crate) fn python_view<'py>(
        &self,
        py: Python<'py>,
        rt: &Runtime,
        id: SegmentId,
        fd: Option<RawFd>,
    ) -> PyResult<Bound<'py, PyAny>> {
        {
            let mut entries = self.lock();
            if let Some(e) = entries.iter_mut().find(|e| e.id == id) {
                let mm = e.weak.bind(py).call0()?;
                if !mm.is_none() {
                    e.receipts += 1;
                    return Ok(mm);
                }
            }
        }
        let (own, raw_fd, writable) = match id.owner() {
            Side::Worker => {
                let seg = rt.pool.get(id).ok_or_else(|| {
                    PyValueError::new_err("cjm: host sent back an unknown segment")
                })?;
                let fd = seg.fd().as_raw_fd();
                (Some(seg), fd, true)
            }
            Side::Host => (
                None,
                fd.ok_or_else(|| {
                    PyValueError::new_err("cjm: shared-memory reference without its fd")
                })?,
                false,
            ),
        };
        let mm = map_python(py, raw_fd, writable)?;
        self.register(py, &mm, id, own)?;
        Ok(mm)
    }

    fn register(
        &self,
        py: Python<'_>,
        mm: &Bound<'_, PyAny>,
        id: SegmentId,
        own: Option<Arc<Segment>>,
    ) -> PyResult<()> {
        // SAFETY: GIL held, `mm` is live; the view is released right away and the
        // mapping's address stays fixed for the mmap object's lifetime.
        let view = unsafe { HeldBuffer::get(mm.as_ptr()) }
            .ok_or_else(|| PyRuntimeError::new_err("cjm: mmap has no buffer"))?;
        let (base, len) = (view.as_ptr() as usize, view.len());
        drop(view);
        let callback = PyCFunction::new_closure(
            py,
            None,
            None,
            move |_args: &Bound<'_, PyTuple>, _kw: Option<&Bound<'_, PyDict>>| -> PyResult<()> {
                if let Ok(rt) = runtime() {
                    rt.segments.gone(rt, id);
                }
                Ok(())
            },
        )?;
        let weak = py
            .import("_weakref")?
            .getattr("ref")?
            .call1((mm, callback))?;
        self.lock().push(Entry {
            id,
            base,
            len,
            weak: weak.unbind(),
            own,
            receipts: 1,
        });
        Ok(())
    }

    /// The Python mapping of `id` was collected.
    fn gone(&self, rt: &Runtime, id: SegmentId) {
        let entry = {
            let mut entries = self.lock();
            entries
                .iter()
                .position(|e| e.id == id)
                .map(|i| entries.swap_remove(i))
        };
        if let Some(e) = entry
            && e.own.is_none()
        {
            let msg = Message::Release {
                segment: id,
                receipts: e.receipts,
            };
            rt.send(&msg, 0);
        }
    }
}

fn map_python(py: Python<'_>, fd: RawFd, writable: bool) -> PyResult<Bound<'_, PyAny>> {
    let mmap = py.import("mmap")?;
    let kwargs = PyDict::new(py);
    let access = if writable {
        "ACCESS_WRITE"
    } else {
        "ACCESS_READ"
    };
    kwargs.set_item("access", mmap.getattr(access)?)?;
    // Python's mmap duplicates the descriptor, so ours may close right after.
    mmap.getattr("mmap")?.call((fd, 0), Some(&kwargs))
}

/// `cjm_worker.shm_alloc(n)`: a writable shared-memory buffer the host receives
/// without a copy when the plugin returns it (or a numpy array over it).
pub(crate) fn shm_alloc(py: Python<'_>, nbytes: usize) -> PyResult<Bound<'_, PyAny>> {
    let rt = runtime()?;
    let buf = rt
        .pool
        .alloc(nbytes)
        .map_err(|e| PyRuntimeError::new_err(format!("cjm: shared memory: {e}")))?;
    let seg = Arc::clone(buf.segment());
    drop(buf);
    let mm = map_python(py, seg.fd().as_raw_fd(), true)?;
    let id = seg.id();
    rt.segments.register(py, &mm, id, Some(seg))?;
    let view = py.get_type::<pyo3::types::PyMemoryView>().call1((mm,))?;
    view.get_item(pyo3::types::PySlice::new(py, 0, nbytes as isize, 1))
}
