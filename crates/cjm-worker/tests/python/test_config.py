"""The config helpers give cjm-plugin-system 0.0.34's results, quirks included.

The host hashes config schemas to detect drift, so a schema must come out
identical, down to key order, whichever package generated it.
"""

import dataclasses
import enum
import json
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Literal, Optional, Tuple, TypeVar, Union

import cjm_plugin_system.core.errors as ref_errors
import cjm_plugin_system.utils.validation as ref
import pytest

import cjm_worker
import cjm_worker.config as sdk
import cjm_worker.errors as sdk_errors
from cjm_worker.config import (
    SCHEMA_DESC,
    SCHEMA_ENUM,
    SCHEMA_FORMAT,
    SCHEMA_MAX,
    SCHEMA_MAX_LEN,
    SCHEMA_MIN,
    SCHEMA_MIN_LEN,
    SCHEMA_PATTERN,
    SCHEMA_TITLE,
)


def canonical(value: Any) -> str:
    """JSON that keeps dict order (so comparing it also compares key order).

    Values JSON cannot hold (enum members, dataclass instances) go through `repr`.
    """
    return json.dumps(value, default=repr)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Inner:
    depth: int = 1


@dataclass
class Everything:
    """A config exercising every metadata key and type the generator knows."""

    model: str = field(
        default="base",
        metadata={
            SCHEMA_TITLE: "Model",
            SCHEMA_DESC: "Which model to load",
            SCHEMA_ENUM: ["base", "large"],
            SCHEMA_MIN_LEN: 1,
            SCHEMA_MAX_LEN: 20,
            SCHEMA_PATTERN: "^[a-z]+$",
            SCHEMA_FORMAT: "slug",
            "unrelated": "dropped",
        },
    )
    beam_size: int = field(default=5, metadata={SCHEMA_MIN: 1, SCHEMA_MAX: 10})
    temperature: float = field(default=0.0, metadata={SCHEMA_MAX: 1.5, SCHEMA_MIN: 0.0})
    verbose: bool = False
    language: Optional[str] = None
    max_tokens: Optional[int] = field(default=None, metadata={SCHEMA_MIN: 1})
    tags: List[str] = field(default_factory=lambda: ["a", "b"])
    weights: List[int] = field(default_factory=list)
    bare_list: List = field(default_factory=list)  # type: ignore[type-arg]
    pep585: list = field(default_factory=list)
    pep585_items: "list[float]" = field(default_factory=list)
    nested_optional: Optional[List[Optional[float]]] = None
    mapping: Dict[str, int] = field(default_factory=dict)
    color: Color = Color.RED
    literal: Literal["x", "y"] = "x"
    inner: Inner = field(default_factory=Inner)
    either: Union[int, str] = 3
    either_or_none: Union[int, str, None] = None
    only_none: None = None
    pair: Tuple[int, int] = (1, 2)
    anything: Any = None
    no_init: int = field(default=7, init=False)
    counter: ClassVar[int] = 0


@dataclass
class Required:
    path: str
    retries: int = field(default=3, metadata={SCHEMA_MIN: 0, SCHEMA_MAX: 5})


@dataclass
class Named:
    __schema_name__ = "custom-name"
    __schema_title__ = "Custom Title"
    __schema_description__ = "Custom description"
    x: int = 1


@dataclass
class Undocumented:
    x: "int" = 1
    y: "Optional[str]" = None


@dataclass
class Unresolvable:
    """Its annotations name something that does not exist."""

    x: "int" = 1
    y: "DoesNotExist" = None  # type: ignore[name-defined]  # noqa: F821
    z: List[int] = field(default_factory=list)


@dataclass
class NewUnion:
    """``X | None`` (Python 3.10+) is not understood by the reference."""

    x: "int | None" = None
    y: "list[int] | None" = None


@dataclass
class Base:
    """A base config."""

    a: int = 1


@dataclass
class Derived(Base):
    """A derived config."""

    b: str = "two"
    a: int = 10


class NotADataclass:
    x: int = 1


SCHEMA_CLASSES = [Everything, Required, Named, Undocumented, Unresolvable, NewUnion, Base, Derived, Inner]


@pytest.mark.parametrize("cls", SCHEMA_CLASSES, ids=lambda c: c.__name__)
def test_schemas_equal_the_reference_down_to_key_order(cls):
    ours = sdk.dataclass_to_jsonschema(cls)
    theirs = ref.dataclass_to_jsonschema(cls)
    assert ours == theirs
    assert canonical(ours) == canonical(theirs)


def test_the_schema_of_the_full_example_is_what_the_reference_documents():
    props = sdk.dataclass_to_jsonschema(Everything)["properties"]
    assert props["model"] == {
        "type": "string",
        "title": "Model",
        "description": "Which model to load",
        "enum": ["base", "large"],
        "minLength": 1,
        "maxLength": 20,
        "pattern": "^[a-z]+$",
        "format": "slug",
        "default": "base",
    }
    assert props["max_tokens"] == {"type": ["integer", "null"], "minimum": 1, "default": None}
    assert props["nested_optional"]["type"] == ["array", "null"]
    assert props["nested_optional"]["items"] == {"type": ["number", "null"]}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}, "default": ["a", "b"]}
    # The reference's quirks, kept on purpose.
    assert props["color"] == {"type": "string", "default": Color.RED}
    assert props["either_or_none"] == {"type": "integer", "default": None}
    assert props["only_none"] == {"type": "string", "default": None}
    assert props["mapping"]["type"] == "string"
    assert props["inner"] == {"type": "string", "default": Inner()}
    assert "counter" not in props
    assert list(props)[-1] == "no_init"


def test_the_metadata_lists_are_shared_not_copied():
    ours = sdk.dataclass_to_jsonschema(Everything)["properties"]["model"]["enum"]
    assert ours is dataclasses.fields(Everything)[0].metadata[SCHEMA_ENUM]


def test_default_factories_are_called_for_each_schema():
    first = sdk.dataclass_to_jsonschema(Everything)["properties"]["tags"]["default"]
    second = sdk.dataclass_to_jsonschema(Everything)["properties"]["tags"]["default"]
    assert first == second and first is not second


@pytest.mark.parametrize(
    "value",
    [NotADataclass, NotADataclass(), int, 5, None, {"x": 1}],
    ids=["class", "instance", "int", "five", "none", "dict"],
)
def test_schema_of_a_non_dataclass_raises_the_reference_error(value):
    with pytest.raises(TypeError) as ours:
        sdk.dataclass_to_jsonschema(value)
    with pytest.raises(TypeError) as theirs:
        ref.dataclass_to_jsonschema(value)
    assert str(ours.value) == str(theirs.value)


def test_schema_of_a_dataclass_instance_fails_like_the_reference():
    with pytest.raises(AttributeError):
        ref.dataclass_to_jsonschema(Inner())
    with pytest.raises(AttributeError):
        sdk.dataclass_to_jsonschema(Inner())


FIELD_CASES = [
    ("base", {SCHEMA_ENUM: ["base", "large"]}, "model"),
    ("huge", {SCHEMA_ENUM: ["base", "large"]}, "model"),
    ("huge", {SCHEMA_ENUM: ("base", "large")}, "model"),
    (None, {SCHEMA_ENUM: ["base"]}, "model"),
    (1, {SCHEMA_ENUM: [True]}, "flag"),
    (5, {SCHEMA_MIN: 1, SCHEMA_MAX: 10}, "beam"),
    (0, {SCHEMA_MIN: 1, SCHEMA_MAX: 10}, "beam"),
    (11, {SCHEMA_MIN: 1, SCHEMA_MAX: 10}, "beam"),
    (1, {SCHEMA_MIN: 1}, "beam"),
    (10, {SCHEMA_MAX: 10}, "beam"),
    (0.5, {SCHEMA_MIN: 0.75}, "temperature"),
    (2.5, {SCHEMA_MAX: 2}, "temperature"),
    (-0.0, {SCHEMA_MIN: 0}, "temperature"),
    (True, {SCHEMA_MIN: 5, SCHEMA_MAX: -5}, "flag"),
    ("abc", {SCHEMA_MIN: 5}, "text"),
    (7, {SCHEMA_MIN_LEN: 2, SCHEMA_PATTERN: "x"}, "number"),
    ("", {SCHEMA_MIN_LEN: 1}, "name"),
    ("abcdef", {SCHEMA_MAX_LEN: 3}, "name"),
    ("abc", {SCHEMA_MIN_LEN: 3, SCHEMA_MAX_LEN: 3}, "name"),
    ("abc", {SCHEMA_PATTERN: "a"}, "name"),
    ("cab", {SCHEMA_PATTERN: "a"}, "name"),
    ("abc1", {SCHEMA_PATTERN: "^[a-z]+$"}, "name"),
    ("abc\n", {SCHEMA_PATTERN: "^[a-z]+$"}, "name"),
    ("x@y.z", {SCHEMA_FORMAT: "email", SCHEMA_TITLE: "Mail", SCHEMA_DESC: "d"}, "mail"),
    ("huge", {SCHEMA_ENUM: ["base"], SCHEMA_MAX_LEN: 1}, "model"),
    ("huge", {SCHEMA_MAX_LEN: 1, SCHEMA_PATTERN: "^z"}, "model"),
    (5, {SCHEMA_MIN: 10, SCHEMA_MAX: 1}, "beam"),
    ("x", {}, ""),
    (42, {SCHEMA_MIN: 50}, ""),
]


@pytest.mark.parametrize(("value", "metadata", "name"), FIELD_CASES)
def test_field_values_are_judged_with_the_reference_messages(value, metadata, name):
    assert sdk.validate_field_value(value, metadata, name) == ref.validate_field_value(value, metadata, name)


def test_field_name_defaults_to_empty():
    assert sdk.validate_field_value(0, {SCHEMA_MIN: 1}) == (False, ": 0 is less than minimum 1")
    assert sdk.validate_field_value(0, {SCHEMA_MIN: 1}) == ref.validate_field_value(0, {SCHEMA_MIN: 1})


CONFIG_INSTANCES = [
    Everything(),
    Everything(model="large", beam_size=10, temperature=1.5),
    Everything(model="huge"),
    Everything(beam_size=0),
    Everything(temperature=2.0),
    Everything(model="base", beam_size=99),  # the first invalid field wins
    Everything(max_tokens=0),
    Required(path="p"),
    Required(path="p", retries=6),
    Inner(),
]


@pytest.mark.parametrize("config", CONFIG_INSTANCES, ids=repr)
def test_configs_validate_like_the_reference(config):
    assert sdk.validate_config(config) == ref.validate_config(config)


@pytest.mark.parametrize("value", [Everything, {"model": "base"}, None, "text"], ids=repr)
def test_validating_a_non_instance_raises_the_reference_error(value):
    with pytest.raises(TypeError) as ours:
        sdk.validate_config(value)
    with pytest.raises(TypeError) as theirs:
        ref.validate_config(value)
    assert str(ours.value) == str(theirs.value)


def test_config_to_dict_matches_the_reference():
    config = Everything(tags=["z"], inner=Inner(depth=3))
    assert sdk.config_to_dict(config) == ref.config_to_dict(config)
    assert sdk.config_to_dict(config)["inner"] == {"depth": 3}
    data = {"a": 1}
    assert sdk.config_to_dict(data) is data
    assert ref.config_to_dict(data) is data


@pytest.mark.parametrize("value", [Everything, None, [("a", 1)], "text"], ids=repr)
def test_config_to_dict_of_anything_else_raises_the_reference_error(value):
    with pytest.raises(TypeError) as ours:
        sdk.config_to_dict(value)
    with pytest.raises(TypeError) as theirs:
        ref.config_to_dict(value)
    assert str(ours.value) == str(theirs.value)


def _instance_or_error(function, *args, **kwargs):
    try:
        return "ok", function(*args, **kwargs)
    except Exception as exc:
        return "error", type(exc).__name__, str(exc), getattr(exc, "fields_invalid", None)


DICT_CASES = [
    (Everything, None, {}),
    (Everything, {}, {}),
    (Everything, {"model": "large", "beam_size": 2}, {}),
    (Everything, {"model": "large", "beam_size": 2}, {"validate": True}),
    (Everything, {"model": "huge"}, {}),
    (Everything, {"model": "huge"}, {"validate": True}),
    (Everything, {"beam_size": 0}, {"validate": True}),
    (Everything, {"zeta": 1, "alpha": 2, "model": "large"}, {}),
    (Everything, {"zeta": 1}, {"strict": True, "validate": True}),
    (Everything, {"no_init": 3}, {}),
    (Required, {}, {}),
    (Required, {"path": "p"}, {}),
    (Required, {"path": "p", "retries": 9}, {"validate": True}),
    (Named, {"x": 2, "y": 3}, {}),
    (Derived, {"a": 5, "b": "x"}, {}),
]


@pytest.mark.parametrize(("cls", "data", "kwargs"), DICT_CASES)
def test_dict_to_config_matches_the_reference(cls, data, kwargs):
    ours = _instance_or_error(sdk.dict_to_config, cls, data, **kwargs)
    theirs = _instance_or_error(ref.dict_to_config, cls, data, **kwargs)
    assert ours == theirs


def test_unknown_keys_raise_a_config_error_listing_them_sorted():
    with pytest.raises(sdk_errors.PluginConfigError) as caught:
        sdk.dict_to_config(Required, {"path": "p", "zeta": 1, "alpha": 2})
    exc = caught.value
    assert isinstance(exc, cjm_worker.PluginInputError)
    assert isinstance(exc, ValueError)
    assert exc.fields_invalid == ["alpha", "zeta"]
    assert exc.config_class_name == "Required"
    assert str(exc) == (
        "Unknown config keys for Required: ['alpha', 'zeta']. "
        "Pass strict=False to ignore unknown keys (forward-compat)."
    )
    with pytest.raises(ref_errors.PluginConfigError) as reference:
        ref.dict_to_config(Required, {"path": "p", "zeta": 1, "alpha": 2})
    assert str(reference.value) == str(exc)
    assert reference.value.config_class_name == exc.config_class_name


def test_a_failed_validation_is_a_plain_value_error():
    with pytest.raises(ValueError) as caught:
        sdk.dict_to_config(Everything, {"beam_size": 0}, validate=True)
    assert type(caught.value) is ValueError
    assert str(caught.value) == "beam_size: 0 is less than minimum 1"


def test_lenient_mode_logs_and_drops_unknown_keys_like_the_reference(caplog):
    results = []
    for module in (ref, sdk):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            config = module.dict_to_config(Required, {"path": "p", "zeta": 1, "alpha": 2}, strict=False)
        results.append((config, [(r.levelno, r.getMessage()) for r in caplog.records]))
    assert results[0] == results[1]
    assert results[1] == (
        Required(path="p"),
        [(logging.WARNING, "Required: ignoring unknown config keys ['alpha', 'zeta'] (lenient mode)")],
    )


@pytest.mark.parametrize("value", [NotADataclass, dict, None, {"a": 1}], ids=repr)
def test_dict_to_config_of_a_non_dataclass_raises_the_reference_error(value):
    assert _instance_or_error(sdk.dict_to_config, value, {}) == _instance_or_error(ref.dict_to_config, value, {})


def test_dict_to_config_of_a_dataclass_instance_fails_like_the_reference():
    ours = _instance_or_error(sdk.dict_to_config, Inner(), {})
    assert ours == _instance_or_error(ref.dict_to_config, Inner(), {})
    assert ours[0] == "error"


@pytest.mark.parametrize("cls", SCHEMA_CLASSES, ids=lambda c: c.__name__)
def test_extract_defaults_matches_the_reference(cls):
    ours = sdk.extract_defaults(cls)
    assert ours == ref.extract_defaults(cls)
    assert canonical(ours) == canonical(ref.extract_defaults(cls))


@pytest.mark.parametrize("value", [NotADataclass, None, 3], ids=repr)
def test_extract_defaults_of_a_non_dataclass_raises_the_reference_error(value):
    assert _instance_or_error(sdk.extract_defaults, value) == _instance_or_error(ref.extract_defaults, value)


def test_schema_keys_and_exports_match_the_reference():
    assert sdk.__all__ == ref.__all__
    for name in ref.__all__:
        if name.startswith("SCHEMA_"):
            assert getattr(sdk, name) == getattr(ref, name)
            assert getattr(cjm_worker, name) == getattr(ref, name)
        elif name != "T":
            assert getattr(cjm_worker, name) is getattr(sdk, name)
    assert set(sdk.__all__) <= set(dir(sdk))


def test_the_type_variable_is_created_once_on_demand():
    assert isinstance(sdk.T, TypeVar)
    assert sdk.T.__name__ == "T"
    assert sdk.T is sdk.T


def test_config_error_is_re_exported_as_in_the_reference():
    assert sdk.PluginConfigError is sdk_errors.PluginConfigError
    assert ref.PluginConfigError is ref_errors.PluginConfigError


def test_pep604_unions_become_strings_as_in_the_reference():
    # On 3.10+ `X | None` is not a `typing.Union`; on 3.9 it cannot even be
    # evaluated, so every field falls back to "string". Either way: "string".
    props = sdk.dataclass_to_jsonschema(NewUnion)["properties"]
    assert props["x"]["type"] == "string"
    assert props == ref.dataclass_to_jsonschema(NewUnion)["properties"]
