"""The forkserver: a warm interpreter that forks workers for a cjm host.

``python -m cjm_worker._forkserver FD [IDLE_SECONDS]`` is started by a host, never
by hand. FD is one end of a private ``SOCK_SEQPACKET`` socket pair. With
IDLE_SECONDS, the server exits once it has had no child for that long (the host
starts another when it needs one). The server imports the worker
runtime once, then for each request forks a child that becomes a worker exactly
as ``python -m cjm_worker`` would be: its own process group, the request's
environment, working directory, ``sys.path``, stdout and stderr. Starting a worker
then costs a fork instead of an interpreter start and the runtime's imports.

Every message is one packet of NUL- or space-separated fields, so that the
server imports nothing a worker would not (no ``json``, no ``socket``). The format
is ``FORK_PROTOCOL``; the host's side of it is ``cjm_proto::forkserver`` (Rust),
and both are tested against the same bytes
(``crates/cjm-proto/tests/fixtures/forkserver``). From the host:

- ``spawn NUL ID NUL MODULE NUL CLASS NUL CWD`` with four descriptors: the
  worker's end of its channel, its stdout, its stderr, and a memfd holding the
  worker's environment as ``NAME=VALUE`` entries, each ended by a NUL. Only the
  child reads the memfd: the environment holds the plugin's secrets, and this
  process's memory is inherited by every worker it forks, so no secret may ever
  pass through it.

To the host:

- ``ready PROTOCOL PID PYTHON_VERSION`` once, when the server is warm (a host
  that speaks another protocol starts its workers with exec instead);
- ``spawned ID PID`` or ``failed ID REASON`` per request;
- ``exited PID STATUS`` when a child ends (STATUS is the raw wait status).

The server is single-threaded, so a fork never copies another thread's lock. It
exits when the host closes its end, and the kernel kills it if the host dies;
its children die with it (the worker runtime sets its parent-death signal).
"""

import _socket
import array
import atexit
import os
import select
import signal
import sys

# The protocol this server speaks, named in its greeting (``FORK_PROTOCOL`` in
# cjm-proto); a change to any message below needs a new one.
FORK_PROTOCOL = "cjm-fork/1"
# Far more than a request needs (the environment travels in its memfd).
MAX_REQUEST = 64 * 1024
FDS_PER_REQUEST = 4


def _encode(*fields) -> bytes:
    """A message to the host: its fields, separated by single spaces."""
    return " ".join(str(f) for f in fields).encode()


def _decode_request(data: bytes):
    """A request's fields (``[b"spawn", ID, MODULE, CLASS, CWD]`` when well formed)."""
    return data.split(b"\0")


def _send(ctl, *fields) -> None:
    ctl.send(_encode(*fields))


def _recv(ctl):
    """One request's fields and descriptors; ``(None, [])`` once the host has gone."""
    fds = array.array("i")
    data, ancillary, flags, _ = ctl.recvmsg(
        MAX_REQUEST, _socket.CMSG_SPACE(FDS_PER_REQUEST * fds.itemsize)
    )
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % fds.itemsize
            fds.frombytes(payload[:usable])
    if not data:
        return None, list(fds)
    if flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC):
        return [], list(fds)
    return _decode_request(data), list(fds)


def _close(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _read_env(fd: int) -> dict:
    """The environment in the memfd, decoded as the interpreter decodes its own."""
    data = os.pread(fd, os.fstat(fd).st_size, 0)
    env = {}
    for entry in data.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep:
            env[os.fsdecode(name)] = os.fsdecode(value)
    return env


class _Server:
    def __init__(self, ctl, idle_seconds=None) -> None:
        self.ctl = ctl
        self.idle_ms = None if idle_seconds is None else max(0, int(idle_seconds * 1000))
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        # `python -m` puts the working directory first on `sys.path` unless the
        # interpreter runs with a safe path; a child puts its own there instead.
        self.lead = 0 if getattr(sys.flags, "safe_path", False) else 1
        self.base_path = list(sys.path[self.lead :])
        self.children = set()

    def serve(self) -> int:
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w)
        poller = select.poll()
        poller.register(self.ctl.fileno(), select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        _send(self.ctl, "ready", FORK_PROTOCOL, os.getpid(), sys.version.split()[0])
        while True:
            events = poller.poll(None if self.children else self.idle_ms)
            if not events and not self.children:
                return 0
            for fd, _ in events:
                if fd == self.wake_r:
                    self._drain_wakeups()
                elif not self._handle_request():
                    return 0
            # Reap after every request too: a child's exit is always reported
            # after its `spawned`, because both go out from this one loop.
            self._reap()

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            _send(self.ctl, "exited", pid, status)

    def _handle_request(self) -> bool:
        try:
            fields, fds = _recv(self.ctl)
        except InterruptedError:
            return True
        if fields is None:
            _close(fds)
            return False
        if len(fields) != 5 or fields[0] != b"spawn" or len(fds) != FDS_PER_REQUEST:
            _close(fds)
            request = fields[1].decode(errors="replace") if len(fields) > 1 else "?"
            _send(self.ctl, "failed", request, "malformed request")
            return True
        request = fields[1].decode()
        try:
            pid = os.fork()
        except OSError as e:
            _close(fds)
            _send(self.ctl, "failed", request, f"fork failed: {e}")
            return True
        if pid == 0:
            self._become_worker(fields, fds)
        # Both sides set the group, so whichever runs first the host can signal
        # the group as soon as it hears the pid.
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass
        _close(fds)
        self.children.add(pid)
        _send(self.ctl, "spawned", request, pid)
        return True

    def _become_worker(self, fields, fds) -> None:
        """In the child: turn into ``python -m cjm_worker`` for this request."""
        code = 1
        try:
            _, _, module, class_name, cwd = fields
            channel, out, err, env_fd = fds
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _close([self.wake_r, self.wake_w])
            self.ctl.close()
            os.setpgid(0, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            _close([out, err])
            env = _read_env(env_fd)
            os.close(env_fd)
            os.chdir(cwd)
            # The server's own variables are the startup subset of `env`, with the
            # same values: change only what differs (fewer pages copied).
            for name in [n for n in os.environ if n not in env]:
                del os.environ[name]
            for name, value in env.items():
                if os.environ.get(name) != value:
                    os.environ[name] = value
            extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
            lead = [os.getcwd()] if self.lead else []
            # Import caches need no reset: a finder rereads a directory whose
            # modification time has changed since it listed it.
            sys.path[:] = lead + extra + self.base_path
            code = _run_worker(os.fsdecode(module), os.fsdecode(class_name), channel)
        except BaseException:  # noqa: BLE001  (whatever happens, the child must not return)
            try:
                import traceback

                traceback.print_exc()
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(code)


def _run_worker(module: str, class_name: str, channel: int) -> int:
    """Runs the worker runtime and returns the exit code ``python -m`` would give."""
    from cjm_worker._native import serve

    argv = [
        "--fd",
        str(channel),
        "--module",
        module,
        "--class",
        class_name,
        "--ppid",
        str(os.getppid()),
    ]
    sys.argv = [os.path.join(os.path.dirname(__file__), "__main__.py"), *argv]
    try:
        code = serve(argv)
    except SystemExit as e:
        code = e.code
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
    return code


def main(argv) -> int:
    try:
        if len(argv) not in (1, 2) or not argv[0].isdigit():
            raise ValueError
        idle = float(argv[1]) if len(argv) == 2 else None
    except ValueError:
        print(
            "usage: python -m cjm_worker._forkserver FD [IDLE_SECONDS]"
            " (a cjm host starts this; see cjm-ctl)",
            file=sys.stderr,
        )
        return 2
    ctl = _socket.socket(fileno=int(argv[0]))
    # Pay for the runtime once; every child inherits it.
    import cjm_worker._native  # noqa: F401
    import cjm_worker.errors  # noqa: F401
    import cjm_worker.interface  # noqa: F401
    import gc

    # Objects that exist now are shared by every child: keep the collector from
    # touching (and so copying) their pages.
    gc.freeze()
    return _Server(ctl, idle).serve()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
