//! Python objects ⇄ the wire codec, without an intermediate tree.

use std::os::fd::{AsRawFd, OwnedFd};

use cjm_proto::{NO_FD, Reader, ShmRef, Side, Writer, tag};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyList, PyString, PyTuple};

use crate::pybuffer::HeldBuffer;
use crate::runtime::Runtime;
use crate::segments::Located;

/// Buffers at least this large go through shared memory instead of the frame.
pub(crate) const SHM_THRESHOLD: usize = 64 * 1024;

const MAX_DEPTH: usize = cjm_proto::MAX_DEPTH;

fn proto_err(e: &cjm_proto::ProtoError) -> PyErr {
    PyValueError::new_err(format!("cjm: {e}"))
}

/// Encodes Python values into a frame body.
pub(crate) struct Encoder<'a> {
    pub(crate) w: Writer,
    rt: &'a Runtime,
}

impl<'a> Encoder<'a> {
    pub(crate) fn new(rt: &'a Runtime) -> Self {
        Self {
            w: Writer::new(),
            rt,
        }
    }

    pub(crate) fn value(&mut self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        self.value_at(obj, 0)
    }

    fn value_at(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<()> {
        if depth > MAX_DEPTH {
            return Err(PyValueError::new_err("value nested too deeply to send"));
        }
        let w = &mut self.w;
        if obj.is_none() {
            w.u8(tag::NONE);
        } else if let Ok(b) = obj.cast::<PyBool>() {
            w.u8(if b.is_true() { tag::TRUE } else { tag::FALSE });
        } else if obj.is_instance_of::<pyo3::types::PyInt>() {
            if let Ok(i) = obj.extract::<i64>() {
                w.int(i);
            } else {
                let s = obj.str()?;
                w.u8(tag::BIGINT);
                w.len_bytes(s.to_cow()?.as_bytes())
                    .map_err(|e| proto_err(&e))?;
            }
        } else if let Ok(f) = obj.cast::<PyFloat>() {
            w.float(f.value());
        } else if let Ok(s) = obj.cast::<PyString>() {
            w.str(&s.to_cow()?).map_err(|e| proto_err(&e))?;
        } else if let Ok(b) = obj.cast::<PyBytes>() {
            let bytes = b.as_bytes();
            self.buffer(bytes.as_ptr(), bytes.len(), bytes)?;
        } else if let Ok(d) = obj.cast::<PyDict>() {
            self.w
                .header(tag::MAP, d.len())
                .map_err(|e| proto_err(&e))?;
            for (k, v) in d.iter() {
                let key = dict_key(&k)?;
                self.w
                    .len_bytes(key.as_bytes())
                    .map_err(|e| proto_err(&e))?;
                self.value_at(&v, depth + 1)?;
            }
        } else if let Ok(l) = obj.cast::<PyList>() {
            self.w
                .header(tag::LIST, l.len())
                .map_err(|e| proto_err(&e))?;
            for v in l.iter() {
                self.value_at(&v, depth + 1)?;
            }
        } else if let Ok(t) = obj.cast::<PyTuple>() {
            self.w
                .header(tag::LIST, t.len())
                .map_err(|e| proto_err(&e))?;
            for v in t.iter() {
                self.value_at(&v, depth + 1)?;
            }
        } else {
            self.other(obj, depth)?;
        }
        Ok(())
    }

    /// Everything that is not a builtin JSON type: arrays, buffers, dataclasses, …
    fn other(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<()> {
        let py = obj.py();
        let ty = obj.get_type();
        let module: String = ty.getattr("__module__")?.extract().unwrap_or_default();
        let name: String = ty.getattr("__name__")?.extract().unwrap_or_default();
        if module == "numpy" && name == "ndarray" {
            return self.ndarray(obj);
        }
        if module == "numpy" && obj.hasattr("item")? && obj.hasattr("dtype")? {
            // A numpy scalar: send the plain Python number it stands for.
            return self.value_at(&obj.call_method0("item")?, depth + 1);
        }
        if let Ok(ba) = obj.cast::<PyByteArray>() {
            // SAFETY: GIL held; the bytes are copied or mapped before any Python code runs.
            let bytes = unsafe { ba.as_bytes() };
            return self.buffer(bytes.as_ptr(), bytes.len(), bytes);
        }
        // SAFETY: GIL held, `obj` is a live object.
        if let Some(view) = unsafe { HeldBuffer::get(obj.as_ptr()) } {
            return self.buffer(view.as_ptr(), view.len(), view.as_slice());
        }
        if ty.hasattr("__dataclass_fields__")? {
            let asdict = py.import("dataclasses")?.getattr("asdict")?;
            return self.value_at(&asdict.call1((obj,))?, depth + 1);
        }
        if (module == "datetime") && obj.hasattr("isoformat")? {
            return self.value_at(&obj.call_method0("isoformat")?, depth + 1);
        }
        if obj.hasattr("to_temp_file")? {
            // The reference's FileBackedDTO: the data travels as a file path.
            return self.value_at(&obj.call_method0("to_temp_file")?, depth + 1);
        }
        Err(PyTypeError::new_err(format!(
            "cannot send a value of type {module}.{name} to the host: use JSON-like values, bytes, numpy arrays or dataclasses"
        )))
    }

    fn ndarray(&mut self, arr: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = arr.py();
        let dtype: String = arr.getattr("dtype")?.getattr("str")?.extract()?;
        if dtype.starts_with("|O") {
            return Err(PyTypeError::new_err(
                "cannot send a numpy array of Python objects to the host",
            ));
        }
        let shape: Vec<u64> = arr.getattr("shape")?.extract()?;
        self.w.u8(tag::ARRAY);
        self.w
            .len_bytes(dtype.as_bytes())
            .map_err(|e| proto_err(&e))?;
        self.w
            .u8(u8::try_from(shape.len())
                .map_err(|_| PyValueError::new_err("too many dimensions"))?);
        for d in &shape {
            self.w.u64(*d);
        }
        // SAFETY: GIL held, `arr` is live.
        if let Some(view) = unsafe { HeldBuffer::get(arr.as_ptr()) } {
            return self.buffer(view.as_ptr(), view.len(), view.as_slice());
        }
        let contiguous = py
            .import("numpy")?
            .getattr("ascontiguousarray")?
            .call1((arr,))?;
        // SAFETY: as above.
        let view = unsafe { HeldBuffer::get(contiguous.as_ptr()) }
            .ok_or_else(|| PyTypeError::new_err("numpy array has no buffer"))?;
        self.buffer(view.as_ptr(), view.len(), view.as_slice())
    }

    /// Bytes at `ptr..ptr+len`: a reference if they already live in shared memory,
    /// shared memory if large, else inline.
    fn buffer(&mut self, ptr: *const u8, len: usize, bytes: &[u8]) -> PyResult<()> {
        match self.rt.segments.locate(ptr as usize, len) {
            Some(Located::Own(seg, offset)) => {
                // Counted as lent when the frame leaves (`Channel::send`), so a frame
                // that fails to send leaves the segment reusable.
                self.w.lend_own(&seg, offset, len);
                return Ok(());
            }
            Some(Located::Host(id, offset)) => {
                self.w.u8(tag::SHM_BYTES);
                self.w.u64(id.0);
                self.w.u16(NO_FD);
                self.w.u64(offset as u64);
                self.w.u64(len as u64);
                return Ok(());
            }
            None => {}
        }
        if len >= SHM_THRESHOLD {
            let mut out = self.rt.pool.alloc(len).map_err(|e| proto_err(&e))?;
            out.as_mut_slice()[..len].copy_from_slice(bytes);
            let buf = cjm_proto::Buffer::Shm(out.freeze());
            return self.w.buffer(&buf, Side::Worker).map_err(|e| proto_err(&e));
        }
        self.w.u8(tag::BYTES);
        self.w.len_bytes(bytes).map_err(|e| proto_err(&e))
    }
}

/// JSON's rule for dict keys: strings as they are; None, bools, ints and floats as
/// their JSON spelling; anything else is an error.
fn dict_key(k: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = k.cast::<PyString>() {
        return Ok(s.to_cow()?.into_owned());
    }
    if k.is_none() {
        return Ok("null".into());
    }
    if let Ok(b) = k.cast::<PyBool>() {
        return Ok(if b.is_true() { "true" } else { "false" }.into());
    }
    if k.is_instance_of::<pyo3::types::PyInt>() || k.is_instance_of::<PyFloat>() {
        return Ok(k.repr()?.to_cow()?.into_owned());
    }
    Err(PyTypeError::new_err(format!(
        "dict keys must be str, int, float, bool or None, not {}",
        k.get_type().name()?
    )))
}

/// Decodes wire values into Python objects.
pub(crate) struct Decoder<'a, 'f> {
    rt: &'a Runtime,
    fds: &'f mut [Option<OwnedFd>],
}

impl<'a, 'f> Decoder<'a, 'f> {
    pub(crate) fn new(rt: &'a Runtime, fds: &'f mut [Option<OwnedFd>]) -> Self {
        Self { rt, fds }
    }

    pub(crate) fn value<'py>(
        &mut self,
        py: Python<'py>,
        r: &mut Reader<'_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.value_at(py, r, 0)
    }

    #[expect(
        clippy::many_single_char_names,
        reason = "r, e, t are the reader, error and tag throughout the codec"
    )]
    fn value_at<'py>(
        &mut self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        depth: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        if depth > MAX_DEPTH {
            return Err(PyValueError::new_err("value nested too deeply"));
        }
        let e = |e: cjm_proto::ProtoError| proto_err(&e);
        let t = r.u8().map_err(e)?;
        Ok(match t {
            tag::NONE => py.None().into_bound(py),
            tag::FALSE => PyBool::new(py, false).to_owned().into_any(),
            tag::TRUE => PyBool::new(py, true).to_owned().into_any(),
            tag::INT => r.i64().map_err(e)?.into_pyobject(py)?.into_any(),
            tag::FLOAT => PyFloat::new(py, r.f64().map_err(e)?).into_any(),
            tag::STR => PyString::new(py, r.len_str().map_err(e)?).into_any(),
            tag::BIGINT => {
                let s = r.len_str().map_err(e)?;
                py.get_type::<pyo3::types::PyInt>().call1((s,))?
            }
            tag::BYTES => PyBytes::new(py, r.len_bytes().map_err(e)?).into_any(),
            tag::SHM_BYTES => {
                let sref = r.shm_ref().map_err(e)?;
                self.shm(py, &sref)?
            }
            tag::LIST => {
                let n = r.count().map_err(e)?;
                let list = PyList::empty(py);
                for _ in 0..n {
                    list.append(self.value_at(py, r, depth + 1)?)?;
                }
                list.into_any()
            }
            tag::MAP => {
                let n = r.count().map_err(e)?;
                let dict = PyDict::new(py);
                for _ in 0..n {
                    let k = PyString::new(py, r.len_str().map_err(e)?);
                    dict.set_item(k, self.value_at(py, r, depth + 1)?)?;
                }
                dict.into_any()
            }
            tag::ARRAY => {
                let dtype = r.len_str().map_err(e)?.to_owned();
                let ndim = r.u8().map_err(e)? as usize;
                let mut shape = Vec::with_capacity(ndim);
                for _ in 0..ndim {
                    shape.push(r.u64().map_err(e)?);
                }
                let data = self.value_at(py, r, depth + 1)?;
                match py.import("numpy") {
                    Ok(np) => {
                        let kwargs = PyDict::new(py);
                        kwargs.set_item("dtype", &dtype)?;
                        let flat = np.getattr("frombuffer")?.call((data,), Some(&kwargs))?;
                        flat.call_method1("reshape", (PyTuple::new(py, &shape)?,))?
                    }
                    // Without numpy the plugin gets the raw bytes.
                    Err(_) => data,
                }
            }
            _ => return Err(PyValueError::new_err("cjm: unknown value tag from host")),
        })
    }

    fn shm<'py>(&mut self, py: Python<'py>, r: &ShmRef) -> PyResult<Bound<'py, PyAny>> {
        let fd = if r.fd_index == NO_FD {
            None
        } else {
            self.fds
                .get_mut(usize::from(r.fd_index))
                .and_then(Option::take)
        };
        let (offset, len) = (r.offset as usize, r.len as usize);
        let mm =
            self.rt
                .segments
                .python_view(py, self.rt, r.id, fd.as_ref().map(AsRawFd::as_raw_fd))?;
        let total: usize = mm.len()?;
        if offset.checked_add(len).is_none_or(|end| end > total) {
            return Err(PyValueError::new_err(
                "cjm: shared-memory range outside its segment",
            ));
        }
        let view = py.get_type::<pyo3::types::PyMemoryView>().call1((mm,))?;
        let slice = pyo3::types::PySlice::new(py, offset as isize, (offset + len) as isize, 1);
        view.get_item(slice)
    }
}
