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


class Prealloc:
    """Returns one shared-memory buffer it allocated on the first call and keeps,
    so a call measures the hand-over of a result, not the allocation."""

    name = "prealloc"
    version = "1.0.0"

    buf = None

    def initialize(self, config=None):
        self.config = config

    def execute(self, size):
        if self.buf is None or len(self.buf) != size:
            from cjm_worker import shm_alloc

            self.buf = shm_alloc(size)
            self.buf[:4] = b"cjm!"
        return self.buf
