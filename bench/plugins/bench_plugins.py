"""Plugins for cjm-bench. Duck-typed and import-light on purpose (spawn and RSS
figures should measure the worker, not the plugin's imports)."""


class Trivial:
    """Returns its first argument."""

    name = "trivial"
    version = "1.0.0"

    def initialize(self, config=None):
        self.config = config

    def execute(self, x=None):
        return x


class Fill:
    """Returns a shared-memory result with every byte set to `byte`: a new buffer each
    call, or with `keep=True` the one it allocated first (so a call measures writing
    the result and handing it over, not allocating it)."""

    name = "fill"
    version = "1.0.0"

    buf = None

    def initialize(self, config=None):
        self.config = config

    def execute(self, size, byte, keep=False):
        import ctypes

        if keep and self.buf is not None and len(self.buf) == size:
            buf = self.buf
        else:
            from cjm_worker import shm_alloc

            buf = shm_alloc(size)
            if keep:
                self.buf = buf
        view = (ctypes.c_char * size).from_buffer(buf)
        ctypes.memset(view, byte, size)
        del view
        return buf


class Sleeper:
    """Sleeps `ms` milliseconds per call: a call that holds its worker, not a core."""

    name = "sleeper"
    version = "1.0.0"

    def initialize(self, config=None):
        pass

    def execute(self, ms=0):
        import time

        time.sleep(ms / 1000)
        return ms
