"""The cjm plugin authoring SDK and worker runtime.

A plugin subclasses `PluginInterface`, describes its configuration with a
dataclass (see `dataclass_to_jsonschema` and the ``SCHEMA_*`` keys) and raises
the typed errors (`PluginInputError`, `PluginTransientError`, ...) so the host
knows what to do with a failure::

    from dataclasses import dataclass, field
    from cjm_worker import PluginInterface, SCHEMA_MIN, dataclass_to_jsonschema

    @dataclass
    class EchoConfig:
        repeat: int = field(default=1, metadata={SCHEMA_MIN: 1})

    class Echo(PluginInterface):
        name = "echo"
        version = "1.0.0"
        def initialize(self, config=None): self.config = config or {}
        def execute(self, text): return text * self.config.get("repeat", 1)
        def get_config_schema(self): return dataclass_to_jsonschema(EchoConfig)
        def get_current_config(self): return dict(self.config)

Every worker imports this package before its plugin, so names are resolved
lazily: ``from cjm_worker import PluginInterface`` loads only
`cjm_worker.interface` and `cjm_worker.errors`, which import nothing a bare
interpreter has not already loaded.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    # What type checkers see, since they do not run `__getattr__`: each public
    # name, re-exported explicitly (`X as X`). test_package.py checks that these
    # are exactly `_LAZY`'s names, each from the submodule `_LAZY` gives.
    from typing import List

    from ._datatypes import (
        ConfigOption as ConfigOption,
        EnvVarSpec as EnvVarSpec,
        FieldOptions as FieldOptions,
        FileBackedDTO as FileBackedDTO,
        ResourceShortfall as ResourceShortfall,
    )
    from ._native import shm_alloc as shm_alloc
    from .config import (
        SCHEMA_DESC as SCHEMA_DESC,
        SCHEMA_ENUM as SCHEMA_ENUM,
        SCHEMA_FORMAT as SCHEMA_FORMAT,
        SCHEMA_MAX as SCHEMA_MAX,
        SCHEMA_MAX_LEN as SCHEMA_MAX_LEN,
        SCHEMA_MIN as SCHEMA_MIN,
        SCHEMA_MIN_LEN as SCHEMA_MIN_LEN,
        SCHEMA_PATTERN as SCHEMA_PATTERN,
        SCHEMA_TITLE as SCHEMA_TITLE,
        config_to_dict as config_to_dict,
        dataclass_to_jsonschema as dataclass_to_jsonschema,
        dict_to_config as dict_to_config,
        extract_defaults as extract_defaults,
        validate_config as validate_config,
        validate_field_value as validate_field_value,
    )
    from .errors import (
        PluginCancelledError as PluginCancelledError,
        PluginConfigError as PluginConfigError,
        PluginDisabledError as PluginDisabledError,
        PluginError as PluginError,
        PluginFatalError as PluginFatalError,
        PluginInputError as PluginInputError,
        PluginNotLoadedError as PluginNotLoadedError,
        PluginResourceError as PluginResourceError,
        PluginTimeoutError as PluginTimeoutError,
        PluginTransientError as PluginTransientError,
        WorkerOOMError as WorkerOOMError,
        classify_exception as classify_exception,
    )
    from .interface import (
        RELOAD_TRIGGER as RELOAD_TRIGGER,
        PluginInterface as PluginInterface,
        collect_plugin_actions as collect_plugin_actions,
        plugin_action as plugin_action,
    )

# The public names, each with the submodule that defines it (loaded when the name
# is first touched). Dataclasses come straight from `_datatypes` so that touching
# one does not load anything else.
_LAZY = {
    # interface
    "PluginInterface": "interface",
    "RELOAD_TRIGGER": "interface",
    "plugin_action": "interface",
    "collect_plugin_actions": "interface",
    "FileBackedDTO": "_datatypes",
    "ConfigOption": "_datatypes",
    "FieldOptions": "_datatypes",
    "EnvVarSpec": "_datatypes",
    # errors
    "PluginError": "errors",
    "PluginInputError": "errors",
    "PluginTransientError": "errors",
    "PluginResourceError": "errors",
    "PluginFatalError": "errors",
    "PluginDisabledError": "errors",
    "PluginNotLoadedError": "errors",
    "PluginTimeoutError": "errors",
    "PluginCancelledError": "errors",
    "WorkerOOMError": "errors",
    "PluginConfigError": "errors",
    "ResourceShortfall": "_datatypes",
    "classify_exception": "errors",
    # config
    "SCHEMA_TITLE": "config",
    "SCHEMA_DESC": "config",
    "SCHEMA_MIN": "config",
    "SCHEMA_MAX": "config",
    "SCHEMA_ENUM": "config",
    "SCHEMA_MIN_LEN": "config",
    "SCHEMA_MAX_LEN": "config",
    "SCHEMA_PATTERN": "config",
    "SCHEMA_FORMAT": "config",
    "validate_field_value": "config",
    "validate_config": "config",
    "config_to_dict": "config",
    "dict_to_config": "config",
    "extract_defaults": "config",
    "dataclass_to_jsonschema": "config",
    # cjm's own: the worker runtime
    "shm_alloc": "_native",
}

# Type checkers do not evaluate a computed `__all__` (theirs would be empty, and
# `from cjm_worker import *` would import nothing); they read the imports above.
if not TYPE_CHECKING:
    __all__ = list(_LAZY)


def __getattr__(name: str) -> object:
    submodule = _LAZY.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # `__import__` rather than `importlib.import_module`: `importlib` itself
    # is not loaded by a bare interpreter.
    module = __import__(submodule, globals(), None, (name,), 1)
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> "List[str]":
    return sorted(set(globals()) | set(_LAZY))
