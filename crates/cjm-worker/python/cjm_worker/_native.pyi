__all__ = ["PROTOCOL", "_cancelled_error", "_emit_log", "serve", "shm_alloc"]

PROTOCOL: str

def serve(argv: list[str]) -> int:
    """Serve one plugin over the channel named by ``--fd`` until the host goes away."""

def shm_alloc(nbytes: int) -> memoryview:
    """A writable shared-memory buffer that the host receives without a copy."""

def _emit_log(level: int, logger: str, message: str) -> None:
    """Forward one log record to the host."""

def _cancelled_error(plugin: str, phase: str) -> dict[str, object]:
    """What a call cancelled before it ran reports as its exception (for tests)."""
