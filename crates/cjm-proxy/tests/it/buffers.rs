use cjm_proto::{Array, Buffer, Value};

use crate::support::{kw, s, spawn};

fn open_fds() -> usize {
    fs_err::read_dir("/proc/self/fd").unwrap().count()
}

fn memfd_mappings() -> usize {
    fs_err::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("memfd:cjm"))
        .count()
}

#[test]
fn a_512_mb_buffer_round_trips_without_leaking_shared_memory() {
    // A first worker starts what lives as long as the host (a forkserver, when
    // the suite runs on them); only what comes and goes with a worker is counted.
    spawn("Echo").stop_blocking();
    let fds_before = open_fds();
    {
        let w = spawn("Echo");
        let len = 512 << 20;
        let mut buf = w.alloc(len).unwrap();
        for (i, chunk) in buf.as_mut_slice().chunks_mut(4096).enumerate() {
            chunk.fill(i as u8);
        }
        let sent = Buffer::Shm(buf.freeze());
        let out = w
            .execute_blocking(vec![Value::Bytes(sent.clone())], vec![])
            .unwrap();
        let Value::Bytes(back) = out else {
            panic!("{out:?}")
        };
        assert!(back.is_shared(), "the result is a zero-copy view");
        assert_eq!(back.len(), len);
        assert!(back.as_slice() == sent.as_slice(), "the bytes survive");
        // The worker read it without copying, and can compute over it.
        let n = w
            .execute_blocking(
                vec![Value::Bytes(sent.clone())],
                kw(&[("action", s("len"))]),
            )
            .unwrap();
        assert_eq!(n, Value::Int(len as i64));
        assert!(
            memfd_mappings() > 0,
            "the count below sees the segments while they live"
        );
        drop((back, sent));
        w.stop_blocking();
    }
    assert_eq!(
        memfd_mappings(),
        0,
        "no shared-memory mapping outlives the worker"
    );
    assert_eq!(open_fds(), fds_before, "no descriptor outlives the worker");
}

#[test]
fn large_inline_bytes_are_moved_to_shared_memory_and_back() {
    let w = spawn("Echo");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = w
        .execute_blocking(vec![Value::Bytes(data.clone().into())], vec![])
        .unwrap();
    let Value::Bytes(back) = out else { panic!() };
    assert!(back.is_shared());
    assert_eq!(back.as_slice(), &data[..]);
}

#[test]
fn a_plugin_can_allocate_its_output_in_shared_memory() {
    let w = spawn("Echo");
    let out = w
        .execute_blocking(
            vec![],
            kw(&[("action", s("shm")), ("size", Value::Int(8 << 20))]),
        )
        .unwrap();
    let Value::Bytes(b) = out else {
        panic!("{out:?}")
    };
    assert!(b.is_shared());
    assert_eq!(b.len(), 8 << 20);
    assert_eq!(&b[..4], b"cjm!");
}

#[test]
fn numpy_arrays_cross_as_typed_arrays() {
    let w = spawn("Echo");
    let data: Vec<u8> = (0..24u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let arr = Value::Array(Array {
        dtype: "<f4".into(),
        shape: vec![2, 3, 4],
        data: data.clone().into(),
    });
    let types = w
        .execute_blocking(vec![arr.clone()], kw(&[("action", s("type"))]))
        .unwrap();
    assert_eq!(types, Value::List(vec![s("ndarray")]));
    let back = w.execute_blocking(vec![arr], vec![]).unwrap();
    let Value::Array(a) = back else {
        panic!("{back:?}")
    };
    assert_eq!(
        (a.dtype.as_str(), a.shape.as_slice()),
        ("<f4", &[2u64, 3, 4][..])
    );
    assert_eq!(a.data.as_slice(), &data[..]);
}

#[test]
fn a_file_backed_dto_travels_as_its_temp_file_path() {
    let w = spawn("Echo");
    let path = w
        .execute_blocking(
            vec![],
            kw(&[("action", s("dto")), ("text", s("hello file"))]),
        )
        .unwrap();
    let path = path.as_str().expect("a path string").to_owned();
    assert!(std::path::Path::new(&path).is_file(), "{path}");
    // Another plugin (here the same one) reads it by path, as with the reference.
    let text = w
        .execute_blocking(vec![s(&path)], kw(&[("action", s("read_path"))]))
        .unwrap();
    assert_eq!(text, s("hello file"));
    let _ = fs_err::remove_file(&path);
}
