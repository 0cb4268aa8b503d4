"""The package root: its public names, and what importing it costs a worker."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import cjm_plugin_system.core.errors as ref_errors
import cjm_plugin_system.core.interface as ref_interface
import cjm_plugin_system.utils.validation as ref_validation
import pytest

import cjm_worker

# Reference names the SDK leaves to the host (the JobError record and its
# construction) or keeps in its submodule (`T`, the type variable).
NOT_AT_THE_ROOT = {"TracebackPolicy", "JobError", "map_bare_exception_to_job_error", "T"}

# The SDK modules a worker must not pay for until a name from them is used.
LAZY_MODULES = {"cjm_worker.errors", "cjm_worker.config", "cjm_worker._datatypes"}

# Standard modules a bare interpreter does not load and the SDK must not
# load on import either.
# Names cjm adds to the reference's SDK.
CJM_ONLY = {"shm_alloc"}

HEAVY_STDLIB = {
    "__future__",
    "contextlib",
    "dataclasses",
    "enum",
    "functools",
    "importlib",
    "inspect",
    "json",
    "logging",
    "re",
    "types",
    "typing",
    "warnings",
}


def test_the_root_exports_every_public_name_of_the_reference_sdk_modules():
    reference = set(ref_errors.__all__) | set(ref_interface.__all__) | set(ref_validation.__all__)
    assert set(cjm_worker.__all__) == (reference - NOT_AT_THE_ROOT) | CJM_ONLY
    assert len(cjm_worker.__all__) == len(set(cjm_worker.__all__))


@pytest.mark.parametrize("name", cjm_worker.__all__)
def test_each_root_name_is_the_submodule_object(name):
    value = getattr(cjm_worker, name)
    for module in ("interface", "errors", "config"):
        submodule = __import__(f"cjm_worker.{module}", fromlist=["_"])
        if name in submodule.__all__:
            assert getattr(submodule, name) is value
    assert name in dir(cjm_worker)
    assert getattr(cjm_worker, name) is value


def test_type_checkers_see_each_public_name_from_the_submodule_that_loads_it():
    # `__getattr__` loads names at run time; type checkers read the imports under
    # `if TYPE_CHECKING:` instead, so those must name the same things.
    tree = ast.parse(Path(cjm_worker.__file__).read_text(encoding="utf-8"))
    (block,) = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
    ]
    seen = {}
    for node in block.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            for alias in node.names:
                assert alias.asname == alias.name, f"{alias.name} is not re-exported as itself"
                seen[alias.name] = node.module
    assert seen == cjm_worker._LAZY
    assert cjm_worker.__all__ == list(cjm_worker._LAZY)


def test_an_unknown_name_raises_attribute_error():
    with pytest.raises(AttributeError, match="module 'cjm_worker' has no attribute 'Nope'"):
        cjm_worker.Nope  # noqa: B018
    assert not hasattr(cjm_worker, "T")


def test_star_import_gives_every_public_name():
    namespace: dict = {}
    exec("from cjm_worker import *", namespace)
    assert set(cjm_worker.__all__) <= set(namespace)


def test_the_package_is_marked_typed():
    assert (Path(cjm_worker.__file__).parent / "py.typed").is_file()


def _run(code, tmp_path, *options):
    # From an empty directory, so nothing in the working directory shadows
    # the installed package.
    return subprocess.run(
        [sys.executable, *options, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=dict(os.environ),
        timeout=20,
    )


def _imported_modules(code, tmp_path):
    """The modules `python -X importtime -c code` reports importing."""
    stderr = _run(code, tmp_path, "-X", "importtime").stderr
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:"):
            name = line.rsplit("|", 1)[-1].strip()
            if name != "imported package":
                names.add(name)
    return names


def test_importing_the_base_class_loads_nothing_a_bare_interpreter_does_not(tmp_path):
    bare = _imported_modules("pass", tmp_path)
    sdk = _imported_modules("import cjm_worker; from cjm_worker import PluginInterface", tmp_path)
    added = sdk - bare
    assert {"cjm_worker", "cjm_worker.interface"} <= added
    assert not {name for name in added if name.split(".")[0] != "cjm_worker"}, added
    assert not (added & HEAVY_STDLIB)
    assert not (added & LAZY_MODULES)


def test_the_subprocess_imports_the_package_under_test(tmp_path):
    out = _run("import cjm_worker; print(cjm_worker.__file__)", tmp_path).stdout.strip()
    assert Path(out).resolve() == Path(cjm_worker.__file__).resolve()


_LOADED_AFTER = """
import json, sys
import cjm_worker
from cjm_worker import PluginInterface
def loaded():
    return sorted(m for m in sys.modules if m.startswith("cjm_worker") and m != "cjm_worker._native")
steps = {"base class": loaded()}
cjm_worker.PluginInputError
steps["an error"] = loaded()
cjm_worker.SCHEMA_MIN
steps["a schema key"] = loaded()
cjm_worker.EnvVarSpec
steps["a dataclass"] = loaded()
print(json.dumps(steps))
"""


def test_sdk_modules_load_only_when_one_of_their_names_is_touched(tmp_path):
    steps = json.loads(_run(_LOADED_AFTER, tmp_path).stdout)
    assert steps == {
        "base class": ["cjm_worker", "cjm_worker.interface"],
        "an error": ["cjm_worker", "cjm_worker.errors", "cjm_worker.interface"],
        "a schema key": ["cjm_worker", "cjm_worker.config", "cjm_worker.errors", "cjm_worker.interface"],
        "a dataclass": [
            "cjm_worker",
            "cjm_worker._datatypes",
            "cjm_worker.config",
            "cjm_worker.errors",
            "cjm_worker.interface",
        ],
    }


def test_a_plugin_using_only_the_base_class_stays_cheap_through_cancellation(tmp_path):
    code = """
import sys
from cjm_worker import PluginInterface
class P(PluginInterface):
    name = "p"
    version = "1"
    def initialize(self, config=None): pass
    def execute(self): pass
    def get_config_schema(self): return {}
    def get_current_config(self): return {}
p = P()
p.report_progress(0.5, "half")
p.report_usage({"pages": 1})
p.reconfigure({}, {"a": 1})
p.check_cancel()
with p.cancel_signal_to(lambda: None):
    pass
print(sorted(m for m in ("logging", "dataclasses", "typing", "cjm_worker.errors") if m in sys.modules))
"""
    bare = _run(
        "import sys; print(sorted(m for m in ('logging', 'dataclasses', 'typing') if m in sys.modules))", tmp_path
    )
    assert _run(code, tmp_path).stdout == bare.stdout
