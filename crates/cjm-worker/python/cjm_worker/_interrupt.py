"""The exception a cjm host raises inside a plugin that ignored a cooperative cancel."""

from .errors import PluginCancelledError

# Set by the worker runtime before it raises `CancelInterrupt`.
PLUGIN_NAME = "<plugin>"


class CancelInterrupt(PluginCancelledError):
    """Raised asynchronously in the worker's main thread (cancel phase 2).

    The interpreter instantiates it with no arguments, so the plugin's name comes
    from the module.
    """

    def __init__(self) -> None:
        super().__init__(PLUGIN_NAME)
