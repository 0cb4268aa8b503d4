"""The plugin error taxonomy.

Every error a plugin raises on purpose is a `PluginError` whose class names a
`category` (``user_input``, ``transient``, ``resource`` or ``fatal``) and says
whether retrying is worthwhile by default (`default_retriable`). The host reads
both to decide what happens to the job; it never sniffs message text.

This module is imported by `cjm_worker.interface` and therefore by every
worker, so it imports nothing at module level: `warnings` is only needed for a
deprecated keyword and `ResourceShortfall` (a dataclass) is loaded on first
use.
"""

# Not `from __future__ import annotations`: importing `__future__` costs more
# than this whole module, so the annotations below are written as strings.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar, Dict, List, Literal, Optional

    from ._datatypes import ResourceShortfall

    _Category = Literal["user_input", "transient", "resource", "fatal"]

__all__ = [
    "PluginError",
    "PluginInputError",
    "PluginTransientError",
    "PluginResourceError",
    "PluginFatalError",
    "PluginDisabledError",
    "PluginNotLoadedError",
    "PluginTimeoutError",
    "PluginCancelledError",
    "WorkerOOMError",
    "PluginConfigError",
    "ResourceShortfall",
    "classify_exception",
]


class PluginError(Exception):
    """Base class of the errors a plugin raises deliberately.

    Subclasses set the class attributes `category` and `default_retriable`.
    This base class only declares them, so reading them on a bare
    `PluginError` raises `AttributeError`, as in cjm-plugin-system.
    """

    category: "ClassVar[_Category]"
    default_retriable: "ClassVar[bool]"


class PluginInputError(PluginError, ValueError):
    """A problem the user can fix: a bad argument, a bad config value, a missing file.

    It is also a `ValueError` so that existing ``except ValueError:`` handlers
    keep catching input errors. The other category bases are deliberately not
    `ValueError` subclasses.
    """

    category: "ClassVar[_Category]" = "user_input"
    default_retriable: "ClassVar[bool]" = True

    def __init__(
        self,
        message: str,
        *,
        fields_invalid: "Optional[List[str]]" = None,
    ) -> None:
        super().__init__(message)
        #: Names of the inputs that failed validation (always a fresh list).
        self.fields_invalid: List[str] = list(fields_invalid) if fields_invalid else []


class PluginTransientError(PluginError):
    """A temporary failure (network blip, brief contention) that a retry may fix."""

    category: "ClassVar[_Category]" = "transient"
    default_retriable: "ClassVar[bool]" = True

    def __init__(
        self,
        message: str,
        *,
        retry_after_seconds: "Optional[float]" = None,
    ) -> None:
        super().__init__(message)
        #: Backoff hint for the scheduler, in seconds.
        self.retry_after_seconds: Optional[float] = retry_after_seconds


class PluginResourceError(PluginError):
    """Resource exhaustion (GPU memory, RAM, disk); the host may evict and retry."""

    category: "ClassVar[_Category]" = "resource"
    default_retriable: "ClassVar[bool]" = True

    def __init__(
        self,
        message: str,
        *,
        resource_shortfall: "Optional[ResourceShortfall]" = None,
    ) -> None:
        super().__init__(message)
        #: What was needed and what was available, when the plugin knows.
        self.resource_shortfall: Optional[ResourceShortfall] = resource_shortfall


class PluginFatalError(PluginError):
    """A permanent failure for these inputs (a bug, a broken state); never retried."""

    category: "ClassVar[_Category]" = "fatal"
    default_retriable: "ClassVar[bool]" = False


class PluginDisabledError(PluginInputError):
    """A call was refused because the plugin is disabled."""

    def __init__(self, plugin_name: str) -> None:
        super().__init__(f"Plugin {plugin_name!r} is disabled")
        self.plugin_name = plugin_name


class PluginNotLoadedError(PluginFatalError):
    """A call was made to a plugin that was never loaded (an orchestration bug)."""

    def __init__(self, plugin_name: str) -> None:
        super().__init__(f"Plugin {plugin_name!r} is not loaded")
        self.plugin_name = plugin_name


class PluginTimeoutError(PluginTransientError):
    """A per-call timeout fired before the plugin finished."""

    def __init__(
        self,
        plugin_name: str,
        timeout_seconds: float,
        *,
        retry_after_seconds: "Optional[float]" = None,
    ) -> None:
        super().__init__(
            f"Plugin {plugin_name!r} timed out after {timeout_seconds:.1f}s",
            retry_after_seconds=retry_after_seconds,
        )
        self.plugin_name = plugin_name
        self.timeout_seconds = timeout_seconds


class PluginCancelledError(PluginTransientError):
    """Raised by `PluginInterface.check_cancel()` once cancellation was requested.

    The category stays ``transient`` (the same inputs may succeed later), but
    a cancellation is an operator's decision, so it is not retried by default.
    """

    default_retriable: "ClassVar[bool]" = False

    def __init__(self, plugin_name: str) -> None:
        super().__init__(f"Plugin {plugin_name!r} cancelled by operator")
        self.plugin_name = plugin_name


class WorkerOOMError(PluginResourceError):
    """The worker process was killed by a signal during a call; assumed out of memory."""

    def __init__(
        self,
        plugin_name: str,
        *,
        process_returncode: "Optional[int]" = None,
        message: "Optional[str]" = None,
    ) -> None:
        if not message:
            detail = "" if process_returncode is None else f" (returncode={process_returncode})"
            message = f"Worker for plugin {plugin_name!r} died from kill-signal{detail}; assuming OOM"
        # The host only saw a dead process, so there are no needed/available numbers.
        super().__init__(message, resource_shortfall=None)
        self.plugin_name = plugin_name
        self.process_returncode = process_returncode


class PluginConfigError(PluginInputError):
    """A config dict does not fit a plugin's config schema (e.g. unknown keys).

    `unknown_keys` is the deprecated name of `fields_invalid`: passing it to
    the constructor warns, reading the property does not.
    """

    def __init__(
        self,
        message: str,
        *,
        fields_invalid: "Optional[List[str]]" = None,
        config_class_name: str = "",
        unknown_keys: "Optional[List[str]]" = None,
    ) -> None:
        if unknown_keys is not None:
            import warnings

            warnings.warn(
                "PluginConfigError(unknown_keys=...) is deprecated; use fields_invalid=... instead. "
                "This parameter will be removed after the substrate overhaul completes (SG-48).",
                DeprecationWarning,
                stacklevel=2,
            )
            if fields_invalid is None:
                fields_invalid = unknown_keys
        super().__init__(message, fields_invalid=fields_invalid)
        #: Name of the dataclass or plugin whose schema was violated.
        self.config_class_name = config_class_name

    @property
    def unknown_keys(self) -> "List[str]":
        """Deprecated, read-only alias of `fields_invalid`."""
        return self.fields_invalid


# An exception takes the category of the first class in its MRO found here, so
# a FileNotFoundError is user input although OSError in general is transient.
_BUILTIN_CATEGORIES: "Dict[type, _Category]" = {
    FileNotFoundError: "user_input",
    NotADirectoryError: "user_input",
    IsADirectoryError: "user_input",
    PermissionError: "user_input",
    KeyError: "user_input",
    ValueError: "user_input",
    TypeError: "user_input",
    TimeoutError: "transient",
    ConnectionError: "transient",
    InterruptedError: "transient",
    BlockingIOError: "transient",
    MemoryError: "resource",
    OSError: "transient",
}


def classify_exception(exc: BaseException) -> "_Category":
    """Return the category of any exception.

    A `PluginError` reports its own `category`; a built-in exception is
    classified by its nearest listed ancestor; anything else is ``fatal``,
    because retrying the unknown is not safe.
    """
    if isinstance(exc, PluginError):
        return exc.category
    for klass in type(exc).__mro__:
        category = _BUILTIN_CATEGORIES.get(klass)
        if category is not None:
            return category
    return "fatal"


def __getattr__(name: str) -> object:
    # `ResourceShortfall` is a dataclass; importing `dataclasses` would cost a
    # worker more than everything else here, so it is built on first use.
    if name == "ResourceShortfall":
        from ._datatypes import ResourceShortfall

        globals()[name] = ResourceShortfall
        return ResourceShortfall
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> "List[str]":
    return sorted(set(globals()) | set(__all__))
