"""`PluginInterface` and its companions behave like cjm-plugin-system 0.0.34's.

Each scenario runs against a plugin built on the reference base class and on
`cjm_worker`'s, and the observations are compared.
"""

import dataclasses
import inspect
import logging
from typing import ClassVar, List

import cjm_plugin_system.core.errors as ref_errors
import cjm_plugin_system.core.interface as ref
import pytest

import cjm_worker
import cjm_worker.errors as sdk_errors
import cjm_worker.interface as sdk

MODULES = pytest.mark.parametrize("mod", [ref, sdk], ids=["reference", "cjm_worker"])


@dataclasses.dataclass
class TriggerConfig:
    model: str = dataclasses.field(default="base", metadata={ref.RELOAD_TRIGGER: "model"})
    device: str = dataclasses.field(default="cpu", metadata={ref.RELOAD_TRIGGER: "model"})
    cache: int = dataclasses.field(default=1, metadata={ref.RELOAD_TRIGGER: "cache"})
    missing: int = dataclasses.field(default=0, metadata={ref.RELOAD_TRIGGER: "nowhere"})
    empty: int = dataclasses.field(default=0, metadata={ref.RELOAD_TRIGGER: ""})
    temperature: float = 0.0


def make_plugin(mod, *, config_class=None, apply_config=False, failing_release=False):
    """Return an instance of a small concrete plugin built on `mod.PluginInterface`."""

    class Demo(mod.PluginInterface):
        @property
        def name(self):
            return "demo"

        @property
        def version(self):
            return "1.0.0"

        def initialize(self, config=None):
            self.calls.append(("initialize", config))

        def execute(self, *args, **kwargs):
            return {"args": args, "kwargs": kwargs}

        def get_config_schema(self):
            return {"type": "object"}

        def get_current_config(self):
            return {}

        def _release_model(self):
            self.calls.append(("release", "model"))
            if failing_release:
                raise RuntimeError("release failed")

        def _release_cache(self):
            self.calls.append(("release", "cache"))

    if config_class is not None:
        Demo.config_class = config_class
    if apply_config:
        Demo._apply_config = lambda self, config: self.calls.append(("apply", config))
    plugin = Demo()
    plugin.calls = []
    return plugin


def both(scenario, **kwargs):
    """Run `scenario(plugin)` against both base classes; return both results."""
    return scenario(make_plugin(ref, **kwargs)), scenario(make_plugin(sdk, **kwargs))


def same(scenario, **kwargs):
    theirs, ours = both(scenario, **kwargs)
    assert ours == theirs
    return ours


def test_the_same_methods_are_abstract():
    assert sdk.PluginInterface.__abstractmethods__ == ref.PluginInterface.__abstractmethods__
    assert sdk.PluginInterface.__abstractmethods__ == {
        "name",
        "version",
        "initialize",
        "execute",
        "get_config_schema",
        "get_current_config",
    }


def test_the_base_class_has_the_reference_members():
    def members(cls):
        return {name for name in dir(cls) if not name.startswith("__")}

    assert members(sdk.PluginInterface) == members(ref.PluginInterface)
    for name in members(ref.PluginInterface):
        ours, theirs = (
            inspect.getattr_static(sdk.PluginInterface, name),
            inspect.getattr_static(ref.PluginInterface, name),
        )
        assert type(ours) is type(theirs), name
        if callable(theirs):
            ours_params = list(inspect.signature(ours).parameters)
            theirs_params = list(inspect.signature(theirs).parameters)
            assert ours_params == theirs_params, name


@MODULES
def test_a_plugin_missing_an_abstract_method_cannot_be_instantiated(mod):
    class Incomplete(mod.PluginInterface):
        @property
        def name(self):
            return "x"

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()


@pytest.mark.parametrize(("mod", "errors"), [(ref, ref_errors), (sdk, sdk_errors)], ids=["reference", "cjm_worker"])
def test_name_and_version_may_be_plain_class_attributes(mod, errors):
    class Plain(mod.PluginInterface):
        name = "plain"
        version = "0.1"

        def initialize(self, config=None):
            pass

        def execute(self, *args, **kwargs):
            return None

        def get_config_schema(self):
            return {}

        def get_current_config(self):
            return {}

    plugin = Plain()
    plugin.cancel()
    with pytest.raises(errors.PluginCancelledError, match="'plain'"):
        plugin.check_cancel()


def test_the_defaults_return_what_the_reference_returns():
    def scenario(plugin):
        stream = plugin.execute_stream(1, 2, key="v")
        return {
            "stream_is_generator": inspect.isgenerator(stream),
            "stream": list(stream),
            "options": plugin.get_config_options(),
            "cleanup": plugin.cleanup(),
            "prefetch": plugin.prefetch(),
            "on_disable": plugin.on_disable(),
            "on_enable": plugin.on_enable(),
            "cancel_requested": plugin._cancel_requested,
            "class_default": type(plugin)._cancel_requested,
            "calls": plugin.calls,
        }

    assert same(scenario)["stream"] == [{"args": (1, 2), "kwargs": {"key": "v"}}]


def test_the_default_stream_runs_execute_only_when_iterated():
    def scenario(plugin):
        plugin.execute = lambda *a, **k: plugin.calls.append("execute") or "out"
        stream = plugin.execute_stream()
        before = list(plugin.calls)
        return before, list(stream), plugin.calls

    assert same(scenario) == ([], ["out"], ["execute"])


FIELD_CHANGES = [
    ({}, {}),
    ({"a": 1}, {"a": 1}),
    ({"a": 1}, {"a": 2}),
    ({"a": 1}, {}),
    ({}, {"a": None}),
    ({"a": None}, {}),
    ({"a": [1, 2]}, {"a": [1, 2]}),
    ({"a": {"x": 1}}, {"a": {"x": 2}}),
    ({"a": 1, "b": 2, "c": 3}, {"a": 1.0, "b": "2", "d": 4}),
    ({"a": float("nan")}, {"a": float("nan")}),
]


@pytest.mark.parametrize(("old", "new"), FIELD_CHANGES)
def test_fields_that_changed_matches_the_reference(old, new):
    same(lambda plugin: plugin.fields_that_changed(old, new))


RECONFIGURATIONS = [
    ({"model": "base"}, {"model": "large"}),
    ({"model": "base", "device": "cpu"}, {"model": "large", "device": "cuda"}),
    ({"cache": 1}, {"cache": 2}),
    ({"model": "a", "cache": 1, "temperature": 0.1}, {"model": "b", "cache": 2, "temperature": 0.2}),
    ({"temperature": 0.1}, {"temperature": 0.5}),
    ({"missing": 1, "empty": 1}, {"missing": 2, "empty": 2}),
    ({"unrelated": 1}, {"unrelated": 2}),
    ({}, {"model": "large"}),
    (None, {"model": "large"}),
    ({"model": "large"}, None),
    (None, None),
    ({"model": "x"}, {"model": "x"}),
]


@pytest.mark.parametrize(("old", "new"), RECONFIGURATIONS)
@pytest.mark.parametrize("apply_config", [False, True])
def test_reconfigure_fires_the_reference_releases_then_reapplies_the_config(old, new, apply_config):
    def scenario(plugin):
        plugin.reconfigure(old, new)
        releases = sorted(call for call in plugin.calls if call[0] == "release")
        others = [call for call in plugin.calls if call[0] != "release"]
        return releases, others

    same(scenario, config_class=TriggerConfig, apply_config=apply_config)


def test_each_trigger_fires_once_in_field_order():
    plugin = make_plugin(sdk, config_class=TriggerConfig)
    plugin.reconfigure_with_triggers(
        {"cache": 1, "device": "cpu", "model": "a"},
        {"cache": 2, "device": "gpu", "model": "b"},
    )
    assert plugin.calls == [("release", "model"), ("release", "cache")]


@pytest.mark.parametrize("config_class", [None, dict, TriggerConfig()])
def test_reconfigure_without_a_config_dataclass_only_reapplies(config_class):
    def scenario(plugin):
        plugin.reconfigure({"model": "a", "cache": 1}, {"model": "b", "cache": 2})
        return sorted(plugin.calls, key=repr)

    same(scenario, config_class=config_class)


def test_a_failing_release_is_logged_and_the_others_still_fire(caplog):
    def scenario(plugin):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            plugin.reconfigure_with_triggers({"model": "a", "cache": 1}, {"model": "b", "cache": 2})
        return sorted(plugin.calls), [(r.levelno, r.getMessage()) for r in caplog.records]

    calls, logs = same(scenario, config_class=TriggerConfig, failing_release=True)
    assert calls == [("release", "cache"), ("release", "model")]
    assert logs == [
        (
            logging.WARNING,
            "_release_model() raised on 'demo'; continuing with remaining triggers: release failed",
        )
    ]


def test_reconfigure_with_triggers_uses_an_overridden_fields_that_changed():
    def scenario(plugin):
        plugin.fields_that_changed = lambda old, new: {"cache"}
        plugin.reconfigure_with_triggers({}, {})
        return plugin.calls

    assert same(scenario, config_class=TriggerConfig) == [("release", "cache")]


def test_cancel_sets_the_flag_and_check_cancel_raises_the_cancelled_error():
    def scenario(plugin):
        before = plugin.check_cancel()
        plugin.cancel()
        with pytest.raises(Exception) as caught:
            plugin.check_cancel()
        exc = caught.value
        return {
            "before": before,
            "flag": plugin._cancel_requested,
            "instance_flag": "_cancel_requested" in vars(plugin),
            "type": type(exc).__name__,
            "message": str(exc),
            "plugin_name": exc.plugin_name,
            "category": exc.category,
            "retriable": exc.default_retriable,
        }

    same(scenario)
    plugin = make_plugin(sdk)
    plugin.cancel()
    with pytest.raises(cjm_worker.PluginCancelledError):
        plugin.check_cancel()
    plugin = make_plugin(ref)
    plugin.cancel()
    with pytest.raises(ref_errors.PluginCancelledError):
        plugin.check_cancel()


def test_clearing_the_flag_ends_the_cancellation():
    def scenario(plugin):
        plugin.cancel()
        plugin._cancel_requested = False
        return plugin.check_cancel()

    same(scenario)


def test_cancel_callbacks_fire_in_order_and_a_failing_one_is_logged(caplog):
    def scenario(plugin):
        fired = []

        def boom():
            fired.append("boom")
            raise RuntimeError("callback failed")

        plugin.register_cancel_callback(lambda: fired.append(1))
        plugin.register_cancel_callback(boom)
        plugin.register_cancel_callback(lambda: fired.append(2))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            plugin.cancel()
            plugin.cancel()
        return fired, [(r.levelno, r.getMessage()) for r in caplog.records], len(plugin._cancel_callbacks)

    fired, logs, count = same(scenario)
    assert fired == [1, "boom", 2, 1, "boom", 2]
    assert logs == [(logging.WARNING, "cancel callback raised on 'demo': callback failed")] * 2
    assert count == 3


def test_a_callback_registering_another_during_cancel_does_not_run_it_yet():
    def scenario(plugin):
        fired = []
        plugin.register_cancel_callback(lambda: plugin.register_cancel_callback(lambda: fired.append("late")))
        plugin.cancel()
        first = list(fired)
        plugin.cancel()
        return first, fired

    assert same(scenario) == ([], ["late"])


def test_cancel_signal_to_registers_only_inside_its_block():
    def scenario(plugin):
        fired = []

        def callback():
            fired.append("cb")

        scope = plugin.cancel_signal_to(callback)
        not_entered = getattr(plugin, "_cancel_callbacks", None)
        with scope as bound:
            inside = list(plugin._cancel_callbacks)
            plugin.cancel()
        after = list(plugin._cancel_callbacks)
        plugin.cancel()
        return not_entered, bound, inside == [callback], after, fired

    assert same(scenario) == (None, None, True, [], ["cb"])


def test_cancel_signal_to_unregisters_and_propagates_on_error():
    def scenario(plugin):
        with pytest.raises(KeyError):
            with plugin.cancel_signal_to(print):
                raise KeyError("inner")
        return plugin._cancel_callbacks

    assert same(scenario) == []


def test_cancel_signal_to_tolerates_a_callback_removed_inside_the_block():
    def scenario(plugin):
        with plugin.cancel_signal_to(print):
            plugin._cancel_callbacks.clear()
        with plugin.cancel_signal_to(print):
            del plugin._cancel_callbacks
        return hasattr(plugin, "_cancel_callbacks")

    assert same(scenario) is False


def test_nested_scopes_with_the_same_callback_each_remove_one_registration():
    def scenario(plugin):
        with plugin.cancel_signal_to(print):
            with plugin.cancel_signal_to(print):
                inner = len(plugin._cancel_callbacks)
            middle = len(plugin._cancel_callbacks)
        return inner, middle, len(plugin._cancel_callbacks)

    assert same(scenario) == (2, 1, 0)


def test_report_progress_and_usage_store_the_reference_attributes():
    usage = {"input_tokens": 12.0, "output_tokens": 3}

    def scenario(plugin):
        plugin.report_progress(0.25)
        first = (plugin._progress, plugin._status_message)
        plugin.report_progress(-1.0, "loading")
        plugin.report_usage(usage)
        return first, plugin._progress, plugin._status_message, plugin._last_api_usage, plugin._last_api_usage is usage

    assert same(scenario) == ((0.25, ""), -1.0, "loading", usage, False)


def test_report_usage_accepts_any_mapping_or_pairs():
    same(lambda plugin: (plugin.report_usage([("pages", 2)]), plugin._last_api_usage))


def test_the_runtime_can_wrap_reporting_methods_on_an_instance():
    plugin = make_plugin(sdk)
    pushed = []
    original = plugin.report_progress

    def pushing(progress, message=""):
        original(progress, message)
        pushed.append((progress, message))

    plugin.report_progress = pushing
    plugin.report_progress(0.5, "half")
    assert pushed == [(0.5, "half")]
    assert (plugin._progress, plugin._status_message) == (0.5, "half")
    assert "__slots__" not in vars(sdk.PluginInterface)
    assert inspect.isfunction(inspect.getattr_static(sdk.PluginInterface, "report_progress"))
    assert inspect.isfunction(inspect.getattr_static(sdk.PluginInterface, "report_usage"))


def test_plugin_action_marks_and_returns_the_same_function():
    def handler(self):
        return "done"

    for mod in (ref, sdk):
        marked = mod.plugin_action("transcribe")(handler)
        assert marked is handler
        assert handler._plugin_action == "transcribe"
        del handler._plugin_action


def _action_classes(mod):
    class Base(mod.PluginInterface):
        @mod.plugin_action("a")
        def do_a(self):
            pass

        @mod.plugin_action("shared")
        def do_shared(self):
            pass

        def plain(self):
            pass

        not_a_tag = type("Tagged", (), {"_plugin_action": 5})()

    class Child(Base):
        @mod.plugin_action("b")
        def do_b(self):
            pass

        def do_a(self):  # an undecorated override; the base's mark still counts
            pass

        @staticmethod
        @mod.plugin_action("static")
        def do_static():
            pass

    class Mixin:
        @mod.plugin_action("mixed")
        def do_mixed(self):
            pass

    class Grandchild(Mixin, Child):
        pass

    return Base, Child, Grandchild


def test_collect_plugin_actions_walks_the_mro_like_the_reference():
    ours = [sdk.collect_plugin_actions(cls) for cls in _action_classes(sdk)]
    theirs = [ref.collect_plugin_actions(cls) for cls in _action_classes(ref)]
    assert ours == theirs
    assert ours[0] == {"a", "shared"}
    assert ours[2] >= {"a", "b", "shared", "mixed"}
    assert sdk.collect_plugin_actions(object) == set()
    assert sdk.collect_plugin_actions(sdk.PluginInterface) == set()


def test_reload_trigger_is_the_reference_key():
    assert sdk.RELOAD_TRIGGER == ref.RELOAD_TRIGGER == "reload_trigger"


@pytest.mark.parametrize("name", ["ConfigOption", "FieldOptions", "EnvVarSpec"])
def test_companion_dataclasses_have_the_reference_fields(name):
    def describe(cls):
        return [
            (
                f.name,
                f.default,
                f.default_factory is not dataclasses.MISSING,
                f.init,
                f.kw_only if hasattr(f, "kw_only") else None,
            )
            for f in dataclasses.fields(cls)
        ]

    ours, theirs = getattr(sdk, name), getattr(ref, name)
    assert dataclasses.is_dataclass(ours)
    assert describe(ours) == describe(theirs)
    assert ours.__dataclass_params__.eq == theirs.__dataclass_params__.eq
    assert ours.__dataclass_params__.frozen == theirs.__dataclass_params__.frozen


def test_companion_dataclasses_convert_like_the_reference():
    rows = []
    for mod in (ref, sdk):
        spec = mod.EnvVarSpec("GEMINI_API_KEY", secret=True, required=True, label="Key")
        visible = mod.EnvVarSpec(name="DEVICE", default="cuda:0", options=["cpu", "cuda:0"])
        options = mod.FieldOptions(
            options=[mod.ConfigOption("m1", "Model 1", {"max_tokens": 10}), mod.ConfigOption("m2", "Model 2")],
            constraints={"maximum": 10},
        )
        rows.append(
            (
                [dataclasses.asdict(s) for s in (spec, visible)],
                dataclasses.asdict(options),
                repr(spec),
                repr(options).replace("cjm_plugin_system.core.interface.", ""),
            )
        )
    assert rows[0] == rows[1]


def test_default_factories_give_each_instance_its_own_dict():
    first, second = sdk.ConfigOption(1, "one"), sdk.ConfigOption(2, "two")
    first.metadata["k"] = 1
    assert second.metadata == {}
    assert sdk.FieldOptions([]).constraints is not sdk.FieldOptions([]).constraints


def test_worker_env_is_read_off_the_class_like_the_reference_introspection():
    class WithEnv(sdk.PluginInterface):
        WORKER_ENV: ClassVar[List[sdk.EnvVarSpec]] = [
            sdk.EnvVarSpec("API_KEY", secret=True, required=True),
            sdk.EnvVarSpec("MODE", default="fast"),
        ]

    # The reference's install-time introspection does exactly this.
    worker_env = getattr(WithEnv, "WORKER_ENV", None) or []
    entries = [dataclasses.asdict(s) if dataclasses.is_dataclass(s) else dict(s) for s in worker_env]
    assert entries == [
        {
            "name": "API_KEY",
            "secret": True,
            "required": True,
            "label": "",
            "description": "",
            "default": None,
            "options": None,
        },
        {
            "name": "MODE",
            "secret": False,
            "required": False,
            "label": "",
            "description": "",
            "default": "fast",
            "options": None,
        },
    ]
    # Like the reference, the base class declares no WORKER_ENV of its own.
    assert not hasattr(sdk.PluginInterface, "WORKER_ENV")
    assert not hasattr(ref.PluginInterface, "WORKER_ENV")


class _WithFile:
    def to_temp_file(self):
        return "/tmp/x"


class _WithAttribute:
    to_temp_file = None


@pytest.mark.parametrize("value", [_WithFile(), _WithAttribute(), object(), "text", None])
def test_file_backed_dto_is_structural_like_the_reference(value):
    assert isinstance(value, sdk.FileBackedDTO) == isinstance(value, ref.FileBackedDTO)


def test_interface_module_exports_the_reference_names():
    assert sdk.__all__ == ref.__all__
    for name in sdk.__all__:
        assert getattr(sdk, name) is getattr(cjm_worker, name)
    assert set(sdk.__all__) <= set(dir(sdk))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sdk.nope  # noqa: B018


def test_check_cancel_raises_the_class_exported_by_errors():
    plugin = make_plugin(sdk)
    plugin.cancel()
    with pytest.raises(sdk_errors.PluginCancelledError) as caught:
        plugin.check_cancel()
    assert type(caught.value) is cjm_worker.PluginCancelledError
