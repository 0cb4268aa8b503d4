"""`PluginInterface`, the base class of every plugin, and its companions.

Every worker imports this module before it can load its plugin, so it imports
only what a bare interpreter has already loaded (`abc`). Everything else,
`cjm_worker.errors` included, is imported inside the method that needs it, and
the dataclasses `ConfigOption`, `FieldOptions`, `EnvVarSpec` and the protocol
`FileBackedDTO` are loaded on first use.
"""

from abc import ABC, abstractmethod

# Not `from __future__ import annotations`: importing `__future__` costs more
# than this whole module, so the annotations below are written as strings.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from logging import Logger
    from types import TracebackType
    from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Type, TypeVar

    from ._datatypes import ConfigOption, EnvVarSpec, FieldOptions, FileBackedDTO

    _F = TypeVar("_F", bound=Callable[..., Any])

__all__ = [
    "RELOAD_TRIGGER",
    "FileBackedDTO",
    "ConfigOption",
    "FieldOptions",
    "EnvVarSpec",
    "PluginInterface",
    "plugin_action",
    "collect_plugin_actions",
]

#: Field-metadata key naming the resource a config field's value is tied to.
#:
#: ``model: str = field(default="base", metadata={RELOAD_TRIGGER: "model"})``
#: makes `PluginInterface.reconfigure` call the plugin's ``_release_model()``
#: when ``model`` changes. Used together with a ``config_class`` class
#: attribute naming the plugin's config dataclass.
RELOAD_TRIGGER = "reload_trigger"

_LAZY_DATATYPES = ("FileBackedDTO", "ConfigOption", "FieldOptions", "EnvVarSpec")


def _logger() -> "Logger":
    # `logging` costs a worker several milliseconds to import and is only
    # needed when a plugin's own hook misbehaves.
    import logging

    return logging.getLogger(__name__)


def _display_name(plugin: object) -> object:
    return getattr(plugin, "name", type(plugin).__name__)


class _CancelScope:
    """The context manager returned by `PluginInterface.cancel_signal_to`."""

    __slots__ = ("_plugin", "_callback")

    def __init__(self, plugin: "PluginInterface", callback: "Callable[[], None]") -> None:
        self._plugin = plugin
        self._callback = callback

    def __enter__(self) -> None:
        self._plugin.register_cancel_callback(self._callback)

    def __exit__(
        self,
        exc_type: "Optional[Type[BaseException]]",
        exc: "Optional[BaseException]",
        tb: "Optional[TracebackType]",
    ) -> None:
        callbacks = getattr(self._plugin, "_cancel_callbacks", None)
        if callbacks is not None:
            try:
                callbacks.remove(self._callback)
            except ValueError:
                # Already gone, e.g. the same callback was registered and
                # removed by an overlapping scope.
                pass


class PluginInterface(ABC):
    """Abstract base class of all plugins.

    Subclasses must implement `name`, `version`, `initialize`, `execute`,
    `get_config_schema` and `get_current_config`. Everything else has a
    working default: `execute_stream`, `get_config_options`, `cleanup`,
    `prefetch`, `reconfigure` (with declarative reload triggers), the
    cooperative-cancellation primitives (`cancel`, `check_cancel`,
    `register_cancel_callback`, `cancel_signal_to`), `on_disable`,
    `on_enable`, `report_progress` and `report_usage`.

    Two optional class attributes are read by the host and by `reconfigure`:
    ``config_class`` (the plugin's config dataclass) and ``WORKER_ENV`` (a
    list of `EnvVarSpec`).
    """

    # Class-level default, so subclasses need not set it in `__init__`;
    # `cancel()` shadows it with an instance attribute. The worker resets it
    # before each call so one cancellation does not leak into the next job.
    _cancel_requested: bool = False

    @property
    @abstractmethod
    def name(self) -> str:
        """Unique identifier of the plugin."""

    @property
    @abstractmethod
    def version(self) -> str:
        """Version of the plugin, e.g. ``"1.0.0"``."""

    @abstractmethod
    def initialize(self, config: "Optional[Dict[str, Any]]" = None) -> None:
        """Set the plugin up with its initial configuration.

        Called once after construction; later changes go through
        `reconfigure`.
        """

    @abstractmethod
    def execute(self, *args: "Any", **kwargs: "Any") -> "Any":
        """Run the plugin's main function and return its result."""

    def execute_stream(self, *args: "Any", **kwargs: "Any") -> "Iterator[Any]":
        """Yield the result in chunks; by default one chunk, `execute`'s result."""
        yield self.execute(*args, **kwargs)

    @abstractmethod
    def get_config_schema(self) -> "Dict[str, Any]":
        """Return the JSON Schema of the plugin's configuration."""

    @abstractmethod
    def get_current_config(self) -> "Dict[str, Any]":
        """Return the configuration currently in effect."""

    def get_config_options(self) -> "Dict[str, FieldOptions]":
        """Return the live option domains of dynamic config fields, by field name.

        For fields whose valid values are only known at run time (such as the
        model list of an API). The default is ``{}``: a fully static schema.
        On a failure to fetch, raise a typed `PluginError`; the host then
        falls back to the static schema.
        """
        return {}

    def cleanup(self) -> None:
        """Release resources before the plugin is unloaded. Default: nothing."""

    def prefetch(self) -> None:
        """Acquire heavy resources (download or load a model) ahead of `execute`.

        Default: nothing. Overrides must be idempotent: the host may call it
        at load time and again on request.
        """

    def reconfigure(
        self,
        old_config: "Optional[Dict[str, Any]]",
        new_config: "Optional[Dict[str, Any]]",
    ) -> None:
        """Apply a configuration change without a full restart.

        Fires the release hooks of the changed `RELOAD_TRIGGER` fields (see
        `reconfigure_with_triggers`), then re-applies the configuration: with
        ``self._apply_config(new_config)`` when the plugin defines it, else
        with ``self.initialize(new_config)``.
        """
        old = old_config or {}
        new = new_config or {}
        self.reconfigure_with_triggers(old, new)
        apply_config = getattr(self, "_apply_config", None)
        if callable(apply_config):
            apply_config(new)
        else:
            self.initialize(new)

    def fields_that_changed(self, old: "Dict[str, Any]", new: "Dict[str, Any]") -> "Set[str]":
        """Return the keys whose values differ between `old` and `new`.

        A key present in only one of them counts as a change from or to
        ``None``; values are compared with ``!=``.
        """
        return {key for key in set(old) | set(new) if old.get(key) != new.get(key)}

    def reconfigure_with_triggers(
        self,
        old_config: "Dict[str, Any]",
        new_config: "Dict[str, Any]",
    ) -> None:
        """Call ``self._release_<trigger>()`` for each trigger whose fields changed.

        Does nothing unless the class has a ``config_class`` attribute that is
        a dataclass. Each changed field whose metadata names a
        `RELOAD_TRIGGER` contributes its trigger; each trigger fires at most
        once, in field order, and only if the plugin defines the matching
        method. A release method that raises is logged and the remaining ones
        still run: releasing resources is best effort.
        """
        config_class = getattr(type(self), "config_class", None)
        if config_class is None:
            return
        # A dataclass can only exist once `dataclasses` is imported, so this
        # costs nothing for plugins that use the feature.
        import dataclasses

        if not dataclasses.is_dataclass(config_class):
            return
        changed = self.fields_that_changed(old_config, new_config)
        if not changed:
            return
        triggers: Dict[str, None] = {}
        for field in dataclasses.fields(config_class):
            if field.name in changed:
                trigger = field.metadata.get(RELOAD_TRIGGER)
                if trigger:
                    triggers[trigger] = None
        for trigger in triggers:
            release = getattr(self, f"_release_{trigger}", None)
            if not callable(release):
                continue
            try:
                release()
            except Exception as error:
                _logger().warning(
                    "_release_%s() raised on %r; continuing with remaining triggers: %s",
                    trigger,
                    _display_name(self),
                    error,
                )

    def cancel(self) -> None:
        """Request cooperative cancellation of the running call.

        Sets the flag `check_cancel` polls, then calls every registered
        cancel callback in registration order; a callback that raises is
        logged and the others still run. Overrides should call
        ``super().cancel()``.
        """
        self._cancel_requested = True
        for callback in list(getattr(self, "_cancel_callbacks", ())):
            try:
                callback()
            except Exception as error:
                _logger().warning("cancel callback raised on %r: %s", _display_name(self), error)

    def check_cancel(self) -> None:
        """Raise `PluginCancelledError` if cancellation was requested.

        Call it at safe points inside `execute`.
        """
        if self._cancel_requested:
            # Imported here: the dozen exception classes of `errors` would
            # double the cost of importing this module, and a worker whose
            # plugin never raises one need not pay it.
            from .errors import PluginCancelledError

            raise PluginCancelledError(self.name)

    def register_cancel_callback(self, callback: "Callable[[], None]") -> None:
        """Have `cancel()` call `callback`, for code that cannot poll.

        Callbacks should be quick, non-blocking and idempotent.
        """
        if not hasattr(self, "_cancel_callbacks"):
            self._cancel_callbacks: List[Callable[[], None]] = []
        self._cancel_callbacks.append(callback)

    def cancel_signal_to(self, callback: "Callable[[], None]") -> "_CancelScope":
        """Return a context manager that registers `callback` for its ``with`` block.

        ``with self.cancel_signal_to(proc.terminate): return proc.wait()``
        """
        return _CancelScope(self, callback)

    def on_disable(self) -> None:
        """Called after the plugin was disabled and its running job finished.

        The worker stays alive; heavy resources may be released here.
        Default: nothing.
        """

    def on_enable(self) -> None:
        """Called when the plugin is enabled again. Default: nothing."""

    def report_progress(self, progress: float, message: str = "") -> None:
        """Report the progress of the running call.

        `progress` runs from 0.0 to 1.0, or is -1.0 when unknown. The worker
        forwards it to the host as it happens.
        """
        self._progress = progress
        self._status_message = message

    def report_usage(self, usage: "Dict[str, float]") -> None:
        """Report the API or service usage measured for the running call.

        Keys are units the plugin chooses (``"input_tokens"``, ``"pages"``,
        ``"characters"``, ...); the host sums them per unit without
        interpreting them. The worker clears it before each call.
        """
        self._last_api_usage = dict(usage)


def plugin_action(action_name: str) -> "Callable[[_F], _F]":
    """Mark a method as the handler of the action `action_name`.

    The method is returned unchanged, with ``_plugin_action`` set;
    `collect_plugin_actions` gathers the marks.
    """

    def mark(func: "_F") -> "_F":
        func._plugin_action = action_name  # type: ignore[attr-defined]
        return func

    return mark


def collect_plugin_actions(cls: type) -> "Set[str]":
    """Return the action names of the `plugin_action` methods of `cls` and its bases."""
    actions: Set[str] = set()
    for klass in cls.__mro__:
        for member in vars(klass).values():
            action = getattr(member, "_plugin_action", None)
            if isinstance(action, str):
                actions.add(action)
    return actions


def __getattr__(name: str) -> object:
    if name in _LAZY_DATATYPES:
        from . import _datatypes

        value = getattr(_datatypes, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> "List[str]":
    return sorted(set(globals()) | set(__all__))
