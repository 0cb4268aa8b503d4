"""Forwards `logging` records to the host as structured log frames."""

import logging

from ._native import _emit_log


class _HostHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
        except Exception:  # a bad format string must not break the plugin
            message = record.getMessage()
        _emit_log(record.levelno, record.name, message)


def install() -> None:
    """Attach the bridge to the root logger once.

    Like the reference worker (which configured INFO), an unconfigured root logger
    is lowered to INFO so plugins' info records reach the host.
    """
    root = logging.getLogger()
    if any(isinstance(h, _HostHandler) for h in root.handlers):
        return
    handler = _HostHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    if root.level == logging.WARNING:
        root.setLevel(logging.INFO)
