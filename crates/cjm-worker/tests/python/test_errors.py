"""The error taxonomy behaves like cjm-plugin-system 0.0.34's."""

import warnings

import cjm_plugin_system.core.errors as ref
import pytest

import cjm_worker
import cjm_worker.errors as sdk

ERROR_NAMES = [
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
]

_MISSING = object()

# (class name, positional args, keyword args); the keyword args may name
# "shortfall", replaced by a ResourceShortfall of the module under test.
CONSTRUCTIONS = [
    ("PluginError", ("plain",), {}),
    ("PluginError", (), {}),
    ("PluginError", ("a", 2), {}),
    ("PluginInputError", ("bad input",), {}),
    ("PluginInputError", ("bad input",), {"fields_invalid": ["b", "a"]}),
    ("PluginInputError", ("bad input",), {"fields_invalid": ("x",)}),
    ("PluginInputError", ("bad input",), {"fields_invalid": []}),
    ("PluginTransientError", ("blip",), {}),
    ("PluginTransientError", ("blip",), {"retry_after_seconds": 2.5}),
    ("PluginResourceError", ("no vram",), {}),
    ("PluginResourceError", ("no vram",), {"resource_shortfall": "shortfall"}),
    ("PluginFatalError", ("bug",), {}),
    ("PluginFatalError", (), {}),
    ("PluginDisabledError", ("whisper",), {}),
    ("PluginNotLoadedError", ("whisper",), {}),
    ("PluginTimeoutError", ("whisper", 3), {}),
    ("PluginTimeoutError", ("whisper", 0.04), {"retry_after_seconds": 1.0}),
    ("PluginTimeoutError", ("whisper", 12.345), {}),
    ("PluginCancelledError", ("whisper",), {}),
    ("PluginCancelledError", ("it's",), {}),
    ("WorkerOOMError", ("whisper",), {}),
    ("WorkerOOMError", ("whisper",), {"process_returncode": -9}),
    ("WorkerOOMError", ("whisper",), {"process_returncode": 0}),
    ("WorkerOOMError", ("whisper",), {"message": "custom"}),
    ("WorkerOOMError", ("whisper",), {"message": "", "process_returncode": 137}),
    ("PluginConfigError", ("bad config",), {}),
    ("PluginConfigError", ("bad config",), {"fields_invalid": ["k"], "config_class_name": "Cfg"}),
]


def _construct(module, name, args, kwargs):
    kwargs = dict(kwargs)
    if kwargs.get("resource_shortfall") == "shortfall":
        kwargs["resource_shortfall"] = module.ResourceShortfall("gpu_vram_mb", 4096.0, 1024.0)
    return getattr(module, name)(*args, **kwargs)


def _observe(exc):
    state = {}
    for key, value in vars(exc).items():
        # A ResourceShortfall is a dataclass of a different module; compare its fields.
        state[key] = (type(value).__name__, vars(value)) if key == "resource_shortfall" and value else value
    return {
        "str": str(exc),
        "args": exc.args,
        "repr_tail": repr(exc).split("(", 1)[1],
        "category": getattr(exc, "category", _MISSING),
        "default_retriable": getattr(exc, "default_retriable", _MISSING),
        "state": state,
        "mro": [klass.__name__ for klass in type(exc).__mro__],
        "unknown_keys": getattr(exc, "unknown_keys", _MISSING),
    }


@pytest.mark.parametrize(("name", "args", "kwargs"), CONSTRUCTIONS)
def test_errors_carry_the_reference_message_attributes_and_category(name, args, kwargs):
    assert _observe(_construct(sdk, name, args, kwargs)) == _observe(_construct(ref, name, args, kwargs))


@pytest.mark.parametrize("name", ERROR_NAMES)
def test_error_classes_have_the_reference_hierarchy_and_class_attributes(name):
    ours, theirs = getattr(sdk, name), getattr(ref, name)
    assert [k.__name__ for k in ours.__mro__] == [k.__name__ for k in theirs.__mro__]
    for attribute in ("category", "default_retriable"):
        assert getattr(ours, attribute, _MISSING) == getattr(theirs, attribute, _MISSING)
    for builtin in (ValueError, LookupError, OSError, RuntimeError, TimeoutError):
        assert issubclass(ours, builtin) == issubclass(theirs, builtin)
    for other in ERROR_NAMES:
        assert issubclass(ours, getattr(sdk, other)) == issubclass(theirs, getattr(ref, other))


def test_bare_plugin_error_declares_but_does_not_define_a_category():
    with pytest.raises(AttributeError):
        sdk.PluginError.category  # noqa: B018
    assert "category" in sdk.PluginError.__annotations__
    assert "default_retriable" in sdk.PluginError.__annotations__


def test_input_errors_are_value_errors_and_others_are_not():
    assert isinstance(sdk.PluginInputError("x"), ValueError)
    assert isinstance(sdk.PluginConfigError("x"), ValueError)
    assert isinstance(sdk.PluginDisabledError("p"), ValueError)
    for name in ("PluginTransientError", "PluginResourceError", "PluginFatalError", "PluginCancelledError"):
        assert not issubclass(getattr(sdk, name), ValueError)


def test_cancelled_error_is_transient_but_not_retried():
    exc = sdk.PluginCancelledError("p")
    assert exc.category == "transient"
    assert exc.default_retriable is False
    assert exc.retry_after_seconds is None


@pytest.mark.parametrize("phase", ["cooperative", "interrupted"])
def test_a_call_cancelled_before_it_ran_reports_the_cancelled_error_class(phase):
    # The worker answers such a call on its channel thread, which never takes the
    # GIL, so the native side writes the class out (src/raised.rs); the host
    # recognises a cancellation by this MRO.
    from cjm_worker import _native

    cls = sdk.PluginCancelledError
    exc = cls("whisper")
    reported = _native._cancelled_error("whisper", phase)
    assert reported["type_name"] == cls.__name__
    assert reported["mro"] == [f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__]
    assert reported["declared_category"] == exc.category
    assert reported["declared_retriable"] is cls.default_retriable
    assert reported["retry_after_seconds"] is exc.retry_after_seconds
    assert reported["fields_invalid"] is None
    assert reported["resource_shortfall"] is None
    assert reported["traceback"] is None
    assert reported["cancel_phase"] == phase
    assert reported["message"] == str(exc) == "Plugin 'whisper' cancelled by operator"
    assert reported["repr"] == repr(exc)


@pytest.mark.parametrize("name", ["it's", 'say "hi"', "both ' and \"", "back\\slash", "tab\tnew\nline\x01"])
def test_the_native_cancelled_error_quotes_a_name_as_python_does(name):
    from cjm_worker import _native

    exc = sdk.PluginCancelledError(name)
    reported = _native._cancelled_error(name, "cooperative")
    assert reported["message"] == str(exc)
    assert reported["repr"] == repr(exc)


def test_fields_invalid_is_a_copy_of_what_was_passed():
    passed = ["a"]
    exc = sdk.PluginInputError("m", fields_invalid=passed)
    passed.append("b")
    assert exc.fields_invalid == ["a"]


def _warned_config_error(module, **kwargs):
    with pytest.warns(DeprecationWarning) as record:
        exc = module.PluginConfigError("m", **kwargs)
    assert len(record) == 1
    return exc, record[0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"unknown_keys": ["z", "a"]},
        {"unknown_keys": []},
        {"unknown_keys": ["z"], "fields_invalid": ["f"]},
        {"unknown_keys": ["z"], "config_class_name": "Cfg"},
    ],
)
def test_unknown_keys_keyword_warns_like_the_reference_and_feeds_fields_invalid(kwargs):
    ours, our_warning = _warned_config_error(sdk, **kwargs)
    theirs, their_warning = _warned_config_error(ref, **kwargs)
    assert str(our_warning.message) == str(their_warning.message)
    # stacklevel=2: the warning points at the code constructing the error.
    assert our_warning.filename == their_warning.filename == __file__
    assert ours.fields_invalid == theirs.fields_invalid
    assert ours.unknown_keys == theirs.unknown_keys
    assert ours.config_class_name == theirs.config_class_name


def test_reading_unknown_keys_does_not_warn_and_cannot_be_assigned():
    exc = sdk.PluginConfigError("m", fields_invalid=["k"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert exc.unknown_keys == ["k"]
    with pytest.raises(AttributeError):
        exc.unknown_keys = ["other"]


def test_resource_shortfall_has_the_reference_fields():
    import dataclasses

    ours = [
        (f.name, f.type if isinstance(f.type, str) else repr(f.type)) for f in dataclasses.fields(sdk.ResourceShortfall)
    ]
    theirs = [
        (f.name, f.type if isinstance(f.type, str) else repr(f.type)) for f in dataclasses.fields(ref.ResourceShortfall)
    ]
    assert [name for name, _ in ours] == [name for name, _ in theirs]
    shortfall = sdk.ResourceShortfall(resource="disk_mb", needed=10.0, available=2.0)
    assert dataclasses.asdict(shortfall) == dataclasses.asdict(ref.ResourceShortfall("disk_mb", 10.0, 2.0))
    assert repr(shortfall) == repr(ref.ResourceShortfall("disk_mb", 10.0, 2.0))
    assert cjm_worker.ResourceShortfall is sdk.ResourceShortfall


class _CustomOSError(OSError):
    pass


class _Unknown(Exception):
    pass


BARE_EXCEPTIONS = [
    FileNotFoundError("f"),
    NotADirectoryError(),
    IsADirectoryError(),
    PermissionError(),
    KeyError("k"),
    IndexError(),
    ValueError(),
    UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
    TypeError(),
    TimeoutError(),
    ConnectionResetError(),
    InterruptedError(),
    BlockingIOError(),
    MemoryError(),
    OSError(),
    _CustomOSError(),
    RuntimeError(),
    _Unknown(),
    KeyboardInterrupt(),
    SystemExit(1),
    StopIteration(),
]


@pytest.mark.parametrize("exc", BARE_EXCEPTIONS, ids=lambda e: type(e).__name__)
def test_bare_exceptions_classify_like_the_reference(exc):
    assert sdk.classify_exception(exc) == ref.classify_exception(exc)


@pytest.mark.parametrize(("name", "args", "kwargs"), CONSTRUCTIONS[3:])
def test_plugin_errors_classify_by_their_own_category(name, args, kwargs):
    ours = sdk.classify_exception(_construct(sdk, name, args, kwargs))
    assert ours == ref.classify_exception(_construct(ref, name, args, kwargs))
    assert ours == getattr(sdk, name).category


def test_errors_module_exports_the_reference_names_it_keeps():
    kept = [n for n in ref.__all__ if n not in ("TracebackPolicy", "JobError", "map_bare_exception_to_job_error")]
    assert sdk.__all__ == kept
    for name in sdk.__all__:
        assert getattr(sdk, name) is getattr(cjm_worker, name)
    assert set(sdk.__all__) <= set(dir(sdk))
