"""The forkserver's side of its protocol, driven the way a host drives it."""

import array
import os
import pathlib
import socket
import subprocess
import sys
import time

from cjm_worker import _forkserver

# The bytes both sides of the protocol are tested against (the host's side:
# crates/cjm-proto/tests/it/forkserver.rs).
FIXTURES = pathlib.Path(__file__).resolve().parents[3] / "cjm-proto" / "tests" / "fixtures" / "forkserver"

PLUGIN = '''
import os

class Probe:
    name = "probe"
    version = "1.0.0"

    def initialize(self, config=None):
        pass

    def execute(self):
        return os.environ.get("PROBE_SECRET")
'''


def _start(tmp_path, *extra):
    host, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cjm_worker._forkserver", str(server_end.fileno()), *extra],
        pass_fds=[server_end.fileno()],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    server_end.close()
    host.settimeout(20)
    return host, proc


def _spawn_request(request_id, module, class_name, cwd: bytes) -> bytes:
    """A spawn request's packet, as the host writes it."""
    return b"\0".join([b"spawn", str(request_id).encode(), module.encode(), class_name.encode(), cwd])


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_the_server_reads_and_writes_the_bytes_the_host_is_tested_against():
    request = _fixture("spawn_request.bin")
    assert _forkserver._decode_request(request) == [
        b"spawn",
        b"7",
        b"probe_plugin",
        b"Probe",
        "/tmp/cjm fork/été".encode(),
    ]
    assert _spawn_request(7, "probe_plugin", "Probe", "/tmp/cjm fork/été".encode()) == request
    assert _forkserver._encode("ready", _forkserver.FORK_PROTOCOL, 4242, "3.11.7") == _fixture("ready.bin")
    assert _forkserver._encode("spawned", 7, 4243) == _fixture("spawned.bin")
    assert _forkserver._encode("failed", 3, "malformed request") == _fixture("failed.bin")
    assert _forkserver._encode("exited", 4243, 256) == _fixture("exited.bin")


def test_the_constants_are_the_ones_the_host_is_checked_against():
    limits = dict(line.split(" ", 1) for line in _fixture("limits.txt").decode().splitlines())
    assert limits == {
        "FORK_PROTOCOL": _forkserver.FORK_PROTOCOL,
        "MAX_REQUEST": str(_forkserver.MAX_REQUEST),
        "FDS_PER_REQUEST": str(_forkserver.FDS_PER_REQUEST),
    }


def _request(host, tmp_path, request_id, env_entries, module="probe_plugin", fds=None):
    channel, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    out_r, out_w = os.pipe()
    env_fd = os.memfd_create("env")
    os.write(env_fd, b"".join(e + b"\0" for e in env_entries))
    sent = fds if fds is not None else [child_end.fileno(), out_w, out_w, env_fd]
    host.sendmsg(
        [_spawn_request(request_id, module, "Probe", bytes(tmp_path))],
        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", sent))],
    )
    for fd in (out_w, env_fd):
        os.close(fd)
    child_end.close()
    return channel, out_r


def test_without_a_descriptor_it_prints_its_usage_and_fails():
    run = subprocess.run(
        [sys.executable, "-m", "cjm_worker._forkserver"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert "usage: python -m cjm_worker._forkserver FD" in run.stderr


def test_a_request_becomes_a_worker_whose_exit_is_reported(tmp_path):
    (tmp_path / "probe_plugin.py").write_text(PLUGIN)
    host, proc = _start(tmp_path)
    try:
        ready = host.recv(4096).decode().split()
        assert ready[:3] == ["ready", _forkserver.FORK_PROTOCOL, str(proc.pid)]
        env = [b"PATH=" + os.environb[b"PATH"], b"PYTHONPATH=" + bytes(tmp_path), b"PROBE_SECRET=x y=z"]
        channel, out_r = _request(host, tmp_path, 7, env)
        spawned = host.recv(4096).decode().split()
        assert spawned[:2] == ["spawned", "7"]
        pid = int(spawned[2])
        channel.settimeout(20)
        # The worker greets the host (Hello) and then reports the plugin loaded.
        assert channel.recv(65536)
        assert channel.recv(65536)
        # Closing the channel is how a host goes away: the worker exits, and the
        # server reports the status of its child.
        channel.close()
        exited = host.recv(4096).decode().split()
        assert exited[:2] == ["exited", str(pid)]
        assert "the host closed the channel" in os.read(out_r, 65536).decode()
        os.close(out_r)
    finally:
        host.close()
        assert proc.wait(timeout=20) == 0


def test_a_malformed_request_fails_alone_and_the_server_keeps_serving(tmp_path):
    (tmp_path / "probe_plugin.py").write_text(PLUGIN)
    host, proc = _start(tmp_path)
    try:
        assert host.recv(4096).startswith(b"ready cjm-fork/1 ")
        r, w = os.pipe()
        # Two descriptors where four are due.
        host.sendmsg(
            [b"spawn\x003\x00probe_plugin\x00Probe\x00/"],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r, w]))],
        )
        os.close(r)
        os.close(w)
        assert host.recv(4096).decode() == "failed 3 malformed request"
        channel, out_r = _request(host, tmp_path, 4, [b"PYTHONPATH=" + bytes(tmp_path)])
        assert host.recv(4096).decode().startswith("spawned 4 ")
        channel.close()
        os.close(out_r)
    finally:
        host.close()
        proc.wait(timeout=20)


def test_an_idle_server_exits_but_never_while_it_has_a_worker(tmp_path):
    (tmp_path / "probe_plugin.py").write_text(PLUGIN)
    idle = 0.3
    host, proc = _start(tmp_path, str(idle))
    try:
        assert host.recv(4096).startswith(b"ready ")
        channel, out_r = _request(host, tmp_path, 1, [b"PYTHONPATH=" + bytes(tmp_path)])
        assert host.recv(4096).startswith(b"spawned 1 ")
        # This is the one claim here that is about time itself: more than the idle
        # time passes with a worker alive (a lower bound, so a slow machine only
        # makes it stronger), and the server still serves the next request.
        started = time.monotonic()
        while time.monotonic() - started < 2 * idle:
            time.sleep(2 * idle - (time.monotonic() - started))
        second, second_out = _request(host, tmp_path, 2, [b"PYTHONPATH=" + bytes(tmp_path)])
        assert host.recv(4096).startswith(b"spawned 2 ")
        for c in (channel, second):
            c.close()
        exits = {host.recv(4096).split()[0] for _ in range(2)}
        assert exits == {b"exited"}
        # Now idle: it leaves on its own, cleanly.
        assert host.recv(4096) == b"", "the server closed its end"
        assert proc.wait(timeout=20) == 0
        for fd in (out_r, second_out):
            os.close(fd)
    finally:
        host.close()
        proc.wait(timeout=20)


def test_a_bad_idle_time_is_a_usage_error():
    run = subprocess.run(
        [sys.executable, "-m", "cjm_worker._forkserver", "3", "soon"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert "IDLE_SECONDS" in run.stderr
