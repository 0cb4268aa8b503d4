//! The forkserver's messages against the bytes the Python server is tested with
//! (`tests/fixtures/forkserver/`): each fixture decodes to the value it holds and
//! that value encodes back to the same bytes.

use std::path::{Path, PathBuf};

use cjm_proto::{FDS_PER_REQUEST, FORK_PROTOCOL, ForkReply, MAX_REQUEST, ProtoError, SpawnRequest};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/forkserver")
        .join(name);
    fs_err::read(path).expect("a forkserver fixture")
}

#[track_caller]
fn check_reply(name: &str, expected: &ForkReply) {
    let bytes = fixture(name);
    assert_eq!(
        &ForkReply::decode(&bytes).expect("decodes"),
        expected,
        "{name}"
    );
    assert_eq!(expected.encode(), bytes, "{name}");
}

#[test]
fn each_reply_decodes_from_the_shared_bytes_and_encodes_back_to_them() {
    check_reply(
        "ready.bin",
        &ForkReply::Ready {
            protocol: Some(FORK_PROTOCOL.into()),
            pid: 4242,
            python: "3.11.7".into(),
        },
    );
    check_reply(
        "ready_unversioned.bin",
        &ForkReply::Ready {
            protocol: None,
            pid: 4242,
            python: "3.11.7".into(),
        },
    );
    check_reply("spawned.bin", &ForkReply::Spawned { id: 7, pid: 4243 });
    check_reply(
        "failed.bin",
        &ForkReply::Failed {
            id: 3,
            reason: "malformed request".into(),
        },
    );
    check_reply(
        "exited.bin",
        &ForkReply::Exited {
            pid: 4243,
            status: 256,
        },
    );
}

#[test]
fn a_spawn_request_decodes_from_the_shared_bytes_and_encodes_back_to_them() {
    let bytes = fixture("spawn_request.bin");
    let request = SpawnRequest {
        id: 7,
        module: "probe_plugin".into(),
        class: "Probe".into(),
        cwd: PathBuf::from("/tmp/cjm fork/été"),
    };
    assert_eq!(SpawnRequest::decode(&bytes).unwrap(), request);
    assert_eq!(request.encode().unwrap(), bytes);
}

#[test]
fn the_constants_are_the_ones_the_python_server_is_checked_against() {
    let limits = String::from_utf8(fixture("limits.txt")).unwrap();
    let value = |name: &str| {
        limits
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} in limits.txt"))
            .to_owned()
    };
    assert_eq!(value("FORK_PROTOCOL"), FORK_PROTOCOL);
    assert_eq!(value("MAX_REQUEST"), MAX_REQUEST.to_string());
    assert_eq!(value("FDS_PER_REQUEST"), FDS_PER_REQUEST.to_string());
}

#[test]
fn a_request_the_server_could_not_read_is_refused_when_encoded() {
    let request = |module: &str, cwd: &str| SpawnRequest {
        id: 1,
        module: module.into(),
        class: "C".into(),
        cwd: cwd.into(),
    };
    let too_large = request("m", &"d".repeat(MAX_REQUEST));
    assert!(
        matches!(too_large.encode(), Err(ProtoError::Unencodable(ref why)) if why.contains("65536")),
        "{:?}",
        too_large.encode()
    );
    // The largest request the server reads still goes.
    let fits = "d".repeat(MAX_REQUEST - request("m", "").encode().unwrap().len());
    assert_eq!(request("m", &fits).encode().unwrap().len(), MAX_REQUEST);
    assert!(matches!(
        request("a\0b", "/").encode(),
        Err(ProtoError::Unencodable(_))
    ));
}

#[test]
fn malformed_packets_are_errors_not_guesses() {
    for bad in [
        &b"spawn\x007\x00m\x00C"[..],
        b"spawn\x00seven\x00m\x00C\x00/",
        b"fork\x007\x00m\x00C\x00/",
    ] {
        assert!(SpawnRequest::decode(bad).is_err(), "{bad:?}");
    }
    for bad in [
        &b"spawned 7"[..],
        b"spawned 7 pid",
        b"exited 4243",
        b"ready",
        b"ready cjm-fork/1 pid 3.11.7",
        b"hello 1 2",
        b"\xff\xfe",
    ] {
        assert!(ForkReply::decode(bad).is_err(), "{bad:?}");
    }
}
