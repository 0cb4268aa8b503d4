"""Builds the example packages into a wheelhouse, offline.

usage: python build_wheels.py OUT_DIR

Each folder here is an ordinary Python project (a `pyproject.toml` with a
`[project]` table, and its import packages beside it). A connected machine would
build them with any build backend; this script makes the same pure-Python wheels
with nothing but the standard library, so the demo needs no network: it reads
name, version, description, dependencies and entry points from `[project]` and
zips the import packages with the METADATA, WHEEL, entry_points.txt and RECORD
files an installer checks. Needs Python 3.11 or later (tomllib).
"""

import base64
import hashlib
import sys
import tomllib
import zipfile
from pathlib import Path


def record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def metadata(project):
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}", f"Version: {project['version']}"]
    if project.get("description"):
        lines.append(f"Summary: {project['description']}")
    lines += [f"Requires-Dist: {d}" for d in project.get("dependencies", [])]
    return "\n".join(lines) + "\n"


def entry_points(project):
    groups = project.get("entry-points", {})
    text = ""
    for group, points in groups.items():
        text += f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()) + "\n"
    return text


def build(source, out):
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    dist = f"{project['name'].replace('-', '_')}-{project['version']}"
    info = f"{dist}.dist-info"
    files = {}
    for package in sorted(p for p in source.iterdir() if (p / "__init__.py").is_file()):
        for f in sorted(package.rglob("*.py")):
            files[f.relative_to(source).as_posix()] = f.read_bytes()
    files[f"{info}/METADATA"] = metadata(project).encode()
    files[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: cjm-examples\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    if project.get("entry-points"):
        files[f"{info}/entry_points.txt"] = entry_points(project).encode()
    record = [record_line(p, d) for p, d in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = out / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, data in files.items():
            # A fixed date: the same sources give the same wheel, byte for byte.
            z.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return wheel


def main(out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).resolve().parent
    for source in sorted(p for p in here.iterdir() if (p / "pyproject.toml").is_file()):
        print(build(source, out).name)


if __name__ == "__main__":
    main(sys.argv[1])
