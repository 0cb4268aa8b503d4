"""cjm's plugin introspection, run by the host inside a plugin's environment.

usage: python -I introspect.py REQUEST_JSON OUT_PATH

REQUEST_JSON: {"module": <import name guessed from the package>, "distribution":
<distribution name or null>, "plugin": <the plugins.yaml name>, "guessed_from": <what
the module name was guessed from, for messages>, "allow_missing_interface": <bool>}.

Writes one JSON object to OUT_PATH (stdout belongs to the plugin's imports):
{"ok": true, "meta": {...}, "source": "meta" | "entry_point", "warnings": [...]}
or {"ok": false, "error": "...", "detail": "<traceback or more>"}, and exits 0 / 2.

Two ways a plugin describes itself:
1. The reference's convention: `<module>.meta.get_plugin_metadata()` returns a dict
   with name, version, description, module, class, interface, ...
2. An entry point in the group `cjm.plugins`: `name = "package.module:Class"`. The
   name is the plugin's, the version and description come from the distribution, the
   interface is the nearest base class defined outside the plugin's package.
"""

import importlib
import importlib.util
import json
import sys
import traceback

GROUP = "cjm.plugins"


def plugin_traceback(e):
    """The traceback of `e` without this script's and importlib's own frames."""
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if not f.filename.startswith("<") and "importlib" not in f.filename]
    return "".join(["Traceback (most recent call last):\n"] + traceback.format_list(frames)
                   + traceback.format_exception_only(type(e), e))


class Failure(Exception):
    """An introspection failure with a message for the operator."""

    def __init__(self, message, detail=""):
        super().__init__(message)
        self.message = message
        self.detail = detail


def import_module(name, what):
    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - any import failure is the plugin's
        raise Failure(f"importing {what} {name!r} failed: {type(e).__name__}: {e}",
                      plugin_traceback(e)) from None


def entry_points_of(distribution, plugin):
    """The `cjm.plugins` entry points of the distribution (or, without one, of any
    distribution whose entry point is named like the plugin)."""
    from importlib import metadata

    if distribution:
        try:
            dist = metadata.distribution(distribution)
        except metadata.PackageNotFoundError:
            dist = None
        if dist is not None:
            return dist, [ep for ep in dist.entry_points if ep.group == GROUP]
    for dist in metadata.distributions():
        eps = [ep for ep in dist.entry_points if ep.group == GROUP and ep.name == plugin]
        if eps:
            return dist, eps
    return None, []


def pick_entry_point(eps, plugin):
    if len(eps) == 1:
        return eps[0]
    named = [ep for ep in eps if ep.name == plugin]
    if named:
        return named[0]
    names = ", ".join(sorted(ep.name for ep in eps))
    raise Failure(f"the distribution declares several `{GROUP}` entry points ({names}) "
                  f"and none is named {plugin!r}")


def interface_of(cls):
    """The nearest base class defined outside the plugin's own top-level package."""
    own = cls.__module__.split(".")[0]
    for base in cls.__mro__[1:]:
        if base is object or base.__module__.split(".")[0] == own:
            continue
        return f"{base.__module__}.{base.__qualname__}"
    return ""


def from_entry_point(dist, ep):
    module, _, attr = ep.value.partition(":")
    attr = attr.strip()
    if not attr or "." in attr:
        raise Failure(f"entry point {ep.name!r} = {ep.value!r} must name a class: "
                      f"'package.module:Class'")
    mod = import_module(module.strip(), "the plugin module")
    cls = getattr(mod, attr, None)
    if not isinstance(cls, type):
        raise Failure(f"entry point {ep.name!r}: {module}:{attr} is not a class")
    description = dist.metadata.get("Summary") or ""
    if not description and cls.__doc__:
        description = cls.__doc__.strip().splitlines()[0]
    meta = {
        "name": ep.name,
        "version": dist.version,
        "description": description,
        "module": module.strip(),
        "class": attr,
        "interface": getattr(cls, "INTERFACE", None) or interface_of(cls),
        "python_path": sys.executable,
    }
    for key in ("resources", "env_vars", "db_path"):
        value = getattr(cls, key.upper(), None)
        if value is not None:
            meta[key] = value
    return meta


def from_meta_module(module):
    mod = import_module(f"{module}.meta", "the metadata module")
    get = getattr(mod, "get_plugin_metadata", None)
    if get is None:
        raise Failure(f"{module}.meta has no get_plugin_metadata()")
    try:
        meta = get()
    except Exception as e:  # noqa: BLE001
        raise Failure(f"{module}.meta.get_plugin_metadata() raised {type(e).__name__}: {e}",
                      plugin_traceback(e)) from None
    if not isinstance(meta, dict):
        raise Failure(f"{module}.meta.get_plugin_metadata() returned a "
                      f"{type(meta).__name__}, not a dict")
    return meta


def find_spec(name):
    """The module's spec, or None if it is not there (importing its package may fail)."""
    try:
        return importlib.util.find_spec(name)
    except Exception as e:  # noqa: BLE001 - the package itself fails to import
        raise Failure(f"importing {name.rpartition('.')[0] or name!r} failed: "
                      f"{type(e).__name__}: {e}", plugin_traceback(e)) from None


def check_interface(meta, allow_missing, warnings):
    """The reference's check: the declared interface must import; then the taxonomy
    derived from it (domain from `cjm_<domain>_plugin_system`, role = class name).
    With `allow_missing_interface` an interface that does not import is a warning,
    and the taxonomy is derived from its name alone."""
    fqn = meta.get("interface") or ""
    if not fqn:
        raise Failure("the plugin declares no interface (a dotted class path)")
    if "." not in fqn:
        raise Failure(f"the interface must be a dotted path, got {fqn!r}")
    mod_path, cls_name = fqn.rsplit(".", 1)
    try:
        mod = import_module(mod_path, "the interface module")
        if not hasattr(mod, cls_name):
            raise Failure(f"interface class {cls_name!r} not found in module {mod_path}")
    except Failure as e:
        if not allow_missing:
            e.message += ("; if the plugin works without it, set "
                          "`allow_missing_interface: true` on its plugins.yaml entry")
            raise
        warnings.append(f"interface {fqn} not verified (allow_missing_interface): "
                        f"{e.message}")
    root = mod_path.split(".")[0]
    domain = root
    if root.startswith("cjm_") and root.endswith("_plugin_system"):
        # The reference's own generic interface (`cjm_plugin_system`) would give an
        # empty domain, which a manifest may not have: its package root stands in.
        domain = root[len("cjm_"):-len("_plugin_system")] or root
    meta["taxonomy"] = {"domain": domain, "role": cls_name, "interface_fqcn": fqn}


def plugin_class(meta, module, warnings):
    """The plugin's class, or None with a warning when its module does not import
    here: the reference installs such a plugin too (a GPU library may only import
    where the worker runs), without a config schema or WORKER_ENV."""
    name = meta.get("class") or ""
    try:
        mod = import_module(meta.get("module") or f"{module}.plugin", "the plugin module")
    except Failure as e:
        warnings.append(f"no config schema or WORKER_ENV: {e.message}")
        return None
    cls = getattr(mod, name, None)
    if not isinstance(cls, type):
        raise Failure(f"plugin class {name!r} not found in module {mod.__name__}")
    return cls


def installed_modules(distribution):
    """What the distribution installs, to show next to a wrong guess."""
    from importlib import metadata

    if not distribution:
        return ""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return f"distribution {distribution!r} is not installed in the environment"
    tops = sorted({str(f).split("/")[0].removesuffix(".py") for f in (dist.files or [])
                   if not str(f).split("/")[0].endswith((".dist-info", ".data"))
                   and not str(f).startswith("..")})
    return (f"distribution {distribution!r} installs the top-level modules: "
            + (", ".join(tops) or "(none)"))


def distribution_of(module, distribution):
    """The installed distribution a meta-convention plugin comes from."""
    from importlib import metadata

    names = [distribution] if distribution else []
    try:
        names += metadata.packages_distributions().get(module.split(".")[0], [])
    except AttributeError:  # Python 3.9 has no packages_distributions()
        pass
    for name in names:
        try:
            return metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def fill_from_distribution(meta, module, distribution, warnings):
    """A description or version the metadata leaves out comes from the
    distribution's `Summary` and `Version`; without one the description stays empty
    (as the reference leaves it) with a warning."""
    if meta.get("description") and meta.get("version"):
        return
    dist = distribution_of(module, distribution)
    if not meta.get("version") and dist is not None:
        meta["version"] = dist.version
    if not meta.get("description"):
        summary = (dist.metadata.get("Summary") or "").strip() if dist is not None else ""
        if summary and summary != "UNKNOWN":
            meta["description"] = summary
        else:
            meta["description"] = ""
            warnings.append("no description: get_plugin_metadata() has none and the "
                            "distribution no Summary; the manifest's is empty")


def code_facts(meta, cls, warnings):
    """The config schema (from an instance, as the reference does) and WORKER_ENV
    (from the class, so a plugin that cannot be built here still declares it)."""
    if "config_schema" not in meta:
        try:
            instance = cls()
            if hasattr(instance, "get_config_schema"):
                meta["config_schema"] = instance.get_config_schema()
            if hasattr(instance, "cleanup"):
                try:
                    instance.cleanup()
                except Exception:  # noqa: BLE001
                    pass
        except Exception as e:  # noqa: BLE001 - optional, as in the reference
            warnings.append(f"no config schema: building {cls.__name__}() or calling "
                            f"get_config_schema() raised {type(e).__name__}: {e}")
    worker_env = getattr(cls, "WORKER_ENV", None) or []
    if worker_env:
        import dataclasses

        meta["worker_env"] = [dataclasses.asdict(s) if dataclasses.is_dataclass(s)
                              else dict(s) for s in worker_env]


def introspect(request):
    module = request["module"]
    dist, eps = entry_points_of(request.get("distribution"), request.get("plugin") or "")
    warnings = []
    if eps:
        meta = from_entry_point(dist, pick_entry_point(eps, request.get("plugin")))
        source = "entry_point"
        if not meta["description"]:
            warnings.append("no description: the distribution has no Summary and the "
                            "class no docstring; the manifest's is empty")
    else:
        guess = (f"cjm guessed the module name {module!r} from "
                 f"{request.get('guessed_from') or 'the package'}")
        if find_spec(module) is None:
            raise Failure(
                f"found no plugin: module {module!r} is not installed and no "
                f"distribution declares a `{GROUP}` entry point"
                + (f" (looked in {request['distribution']!r})"
                   if request.get("distribution") else "")
                + f"; {guess}. If the package's import name differs, declare the plugin "
                f"in its pyproject.toml: [project.entry-points.\"{GROUP}\"] "
                f"<name> = \"<module>:<Class>\"",
                installed_modules(request.get("distribution")))
        if find_spec(f"{module}.meta") is None:
            raise Failure(
                f"found no plugin metadata: {module} has no meta module; a plugin either "
                f"provides {module}.meta.get_plugin_metadata() or declares a `{GROUP}` "
                f"entry point; {guess}")
        meta = from_meta_module(module)
        source = "meta"
        fill_from_distribution(meta, module, request.get("distribution"), warnings)
    check_interface(meta, request.get("allow_missing_interface"), warnings)
    cls = plugin_class(meta, module, warnings)
    if cls is not None:
        code_facts(meta, cls, warnings)
    meta.pop("type", None)
    return {"ok": True, "meta": meta, "source": source, "warnings": warnings}


def main():
    request = json.loads(sys.argv[1])
    out = sys.argv[2]
    try:
        result = introspect(request)
        text = json.dumps(result, default=str)
        code = 0
    except Failure as e:
        text = json.dumps({"ok": False, "error": e.message, "detail": e.detail})
        code = 2
    except BaseException as e:  # noqa: BLE001 - SystemExit from a plugin, too
        text = json.dumps({"ok": False,
                           "error": f"introspection raised {type(e).__name__}: {e}",
                           "detail": plugin_traceback(e)})
        code = 2
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    sys.exit(code)


if __name__ == "__main__":
    main()
