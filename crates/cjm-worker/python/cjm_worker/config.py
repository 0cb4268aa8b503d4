"""Helpers for plugin configuration dataclasses.

A plugin describes its configuration as a dataclass whose fields carry
JSON-Schema keywords in their metadata::

    @dataclass
    class WhisperConfig:
        model: str = field(default="base", metadata={SCHEMA_ENUM: ["base", "large"]})
        beam_size: int = field(default=5, metadata={SCHEMA_MIN: 1, SCHEMA_MAX: 10})

`dataclass_to_jsonschema` turns it into the schema the host validates
against and shows as a form; `dict_to_config`, `config_to_dict`,
`validate_config` and `extract_defaults` move between dicts and instances.

The output matches cjm-plugin-system's ``utils.validation`` exactly, quirks
included, because the host hashes schemas to detect drift: a plugin that moves
from that package to this one must not appear to have changed.

Importing this module is cheap (plugins import it at start-up): `typing`,
`dataclasses`, `re`, `logging` and even `cjm_worker.errors` are imported by the
functions that use them. `PluginConfigError` is re-exported from here, as
cjm-plugin-system's ``utils.validation`` does, on first use.
"""

# Not `from __future__ import annotations`: importing `__future__` costs more
# than this whole module, so the annotations below are written as strings.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

    from .errors import PluginConfigError as PluginConfigError

    T = TypeVar("T")

__all__ = [
    "T",
    "SCHEMA_TITLE",
    "SCHEMA_DESC",
    "SCHEMA_MIN",
    "SCHEMA_MAX",
    "SCHEMA_ENUM",
    "SCHEMA_MIN_LEN",
    "SCHEMA_MAX_LEN",
    "SCHEMA_PATTERN",
    "SCHEMA_FORMAT",
    "validate_field_value",
    "validate_config",
    "config_to_dict",
    "dict_to_config",
    "extract_defaults",
    "dataclass_to_jsonschema",
]

# Keys of a field's metadata, copied into its JSON Schema property as they are.
SCHEMA_TITLE = "title"
"""Display title of the field."""
SCHEMA_DESC = "description"
"""Help text of the field."""
SCHEMA_MIN = "minimum"
"""Smallest allowed number."""
SCHEMA_MAX = "maximum"
"""Largest allowed number."""
SCHEMA_ENUM = "enum"
"""The allowed values (a UI shows a drop-down)."""
SCHEMA_MIN_LEN = "minLength"
"""Shortest allowed string."""
SCHEMA_MAX_LEN = "maxLength"
"""Longest allowed string."""
SCHEMA_PATTERN = "pattern"
"""Regular expression a string must match at its start (`re.match`)."""
SCHEMA_FORMAT = "format"
"""String format (``email``, ``uri``, ``date``, ...); not checked, only copied."""

_SCHEMA_KEYS = (
    SCHEMA_TITLE,
    SCHEMA_DESC,
    SCHEMA_MIN,
    SCHEMA_MAX,
    SCHEMA_ENUM,
    SCHEMA_MIN_LEN,
    SCHEMA_MAX_LEN,
    SCHEMA_PATTERN,
    SCHEMA_FORMAT,
)

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def validate_field_value(
    value: "Any",
    metadata: "Mapping[str, Any]",
    field_name: str = "",
) -> "Tuple[bool, Optional[str]]":
    """Check one value against the constraints in a field's metadata.

    Returns ``(True, None)``, or ``(False, message)`` for the first violated
    constraint, checked in this order: enum, minimum, maximum, minLength,
    maxLength, pattern. Number bounds ignore booleans.
    """
    if SCHEMA_ENUM in metadata:
        allowed = metadata[SCHEMA_ENUM]
        if value not in allowed:
            return False, f"{field_name}: {value!r} is not one of {allowed}"

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if SCHEMA_MIN in metadata and value < metadata[SCHEMA_MIN]:
            return False, f"{field_name}: {value} is less than minimum {metadata[SCHEMA_MIN]}"
        if SCHEMA_MAX in metadata and value > metadata[SCHEMA_MAX]:
            return False, f"{field_name}: {value} is greater than maximum {metadata[SCHEMA_MAX]}"

    if isinstance(value, str):
        length = len(value)
        if SCHEMA_MIN_LEN in metadata and length < metadata[SCHEMA_MIN_LEN]:
            return (
                False,
                f"{field_name}: string length {length} is less than minimum {metadata[SCHEMA_MIN_LEN]}",
            )
        if SCHEMA_MAX_LEN in metadata and length > metadata[SCHEMA_MAX_LEN]:
            return (
                False,
                f"{field_name}: string length {length} is greater than maximum {metadata[SCHEMA_MAX_LEN]}",
            )
        if SCHEMA_PATTERN in metadata:
            import re

            pattern = metadata[SCHEMA_PATTERN]
            if not re.match(pattern, value):
                return False, f"{field_name}: {value!r} does not match pattern {pattern!r}"

    return True, None


def validate_config(config: "Any") -> "Tuple[bool, Optional[str]]":
    """Check every field of a config dataclass instance against its metadata.

    Returns the result of `validate_field_value` for the first invalid field,
    or ``(True, None)``. Raises `TypeError` for anything but a dataclass
    instance.
    """
    from dataclasses import fields, is_dataclass

    if not is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"Expected dataclass instance, got {type(config).__name__}")
    for field in fields(config):
        ok, error = validate_field_value(getattr(config, field.name), field.metadata or {}, field.name)
        if not ok:
            return False, error
    return True, None


def config_to_dict(config: "Any") -> "Dict[str, Any]":
    """Return a config dataclass instance as a dict (recursively).

    A dict is returned as it is (the same object). Anything else raises
    `TypeError`.
    """
    from dataclasses import asdict, is_dataclass

    if is_dataclass(config) and not isinstance(config, type):
        return asdict(config)
    if isinstance(config, dict):
        return config
    raise TypeError(f"Expected dataclass instance or dict, got {type(config).__name__}")


def dict_to_config(
    config_class: "Type[T]",
    data: "Optional[Dict[str, Any]]" = None,
    validate: bool = False,
    strict: bool = True,
) -> "T":
    """Build an instance of the config dataclass `config_class` from `data`.

    Keys that are not fields raise `PluginConfigError` (its `fields_invalid`
    lists them, sorted). With ``strict=False`` they are logged as a warning
    and dropped instead, for forward compatibility. With ``validate=True``
    the instance is also checked with `validate_config`, and a violation
    raises `ValueError`.
    """
    from dataclasses import fields, is_dataclass

    if not is_dataclass(config_class):
        raise TypeError(f"Expected dataclass type, got {type(config_class).__name__}")
    if data is None:
        data = {}

    field_names = {field.name for field in fields(config_class)}
    unknown = sorted(set(data) - field_names)
    if unknown:
        class_name = config_class.__name__
        if strict:
            from .errors import PluginConfigError

            raise PluginConfigError(
                f"Unknown config keys for {class_name}: {unknown}. "
                "Pass strict=False to ignore unknown keys (forward-compat).",
                fields_invalid=unknown,
                config_class_name=class_name,
            )
        import logging

        logging.getLogger(__name__).warning("%s: ignoring unknown config keys %s (lenient mode)", class_name, unknown)

    config = config_class(**{key: value for key, value in data.items() if key in field_names})
    if validate:
        ok, error = validate_config(config)
        if not ok:
            raise ValueError(error)
    return config


def extract_defaults(config_class: type) -> "Dict[str, Any]":
    """Return the default of every field that has one (factories are called)."""
    from dataclasses import MISSING, fields, is_dataclass

    if not is_dataclass(config_class):
        raise TypeError(f"Expected dataclass type, got {type(config_class).__name__}")
    defaults: Dict[str, Any] = {}
    for field in fields(config_class):
        if field.default is not MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not MISSING:
            defaults[field.name] = field.default_factory()
    return defaults


def _json_type(annotation: "Any") -> "Dict[str, Any]":
    """Return the JSON Schema fragment for one resolved type annotation.

    Only ``List[X]``, ``Optional[X]`` / ``Union[...]``, `str`, `int`, `float`
    and `bool` are understood; everything else (dicts, enums, nested
    dataclasses, ``X | None`` on Python 3.10+) becomes ``"string"``. A union
    of several types takes the first one and drops ``null``. These are
    cjm-plugin-system's rules, kept so schemas (and their hashes) agree.
    """
    from typing import Union, get_args, get_origin

    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is list:
        return {"type": "array", "items": _json_type(args[0] if args else str)}
    if origin is Union:
        members = [arg for arg in args if arg is not type(None)]
        if len(members) == 1:
            schema = _json_type(members[0])
            schema["type"] = [schema["type"], "null"]
            return schema
        if members:
            return _json_type(members[0])
        return {"type": "null"}
    return {"type": _JSON_TYPES.get(annotation, "string")}


def dataclass_to_jsonschema(cls: type) -> "Dict[str, Any]":
    """Return the JSON Schema (for validation and form generation) of a config dataclass.

    The object's ``name``, ``title`` and ``description`` default to the class
    name, the class name and its docstring, and can be set with the class
    attributes ``__schema_name__``, ``__schema_title__`` and
    ``__schema_description__``. Each field becomes a property: its type (see
    above), the `SCHEMA_*` keys of its metadata, and its default (a
    ``default_factory`` is called). If the annotations cannot be resolved,
    every field is typed ``"string"``.
    """
    if not hasattr(cls, "__dataclass_fields__"):
        raise TypeError(f"{cls} is not a dataclass")
    from dataclasses import MISSING, fields
    from typing import get_type_hints

    properties: Dict[str, Any] = {}
    schema: Dict[str, Any] = {
        "name": getattr(cls, "__schema_name__", cls.__name__),
        "title": getattr(cls, "__schema_title__", cls.__name__),
        "description": getattr(cls, "__schema_description__", cls.__doc__ or ""),
        "type": "object",
        "properties": properties,
    }
    try:
        hints = get_type_hints(cls)
    except Exception:
        hints = {}

    for field in fields(cls):
        prop = _json_type(hints.get(field.name, str))
        metadata: Mapping[str, Any] = field.metadata or {}
        for key in _SCHEMA_KEYS:
            if key in metadata:
                prop[key] = metadata[key]
        if field.default is not MISSING:
            prop["default"] = field.default
        elif field.default_factory is not MISSING:
            prop["default"] = field.default_factory()
        properties[field.name] = prop
    return schema


def __getattr__(name: str) -> object:
    # `T` is the type variable of `dict_to_config`; building it needs `typing`.
    if name == "T":
        from typing import TypeVar

        return globals().setdefault("T", TypeVar("T"))
    if name == "PluginConfigError":
        from .errors import PluginConfigError

        globals()[name] = PluginConfigError
        return PluginConfigError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> "List[str]":
    return sorted(set(globals()) | set(__all__))
