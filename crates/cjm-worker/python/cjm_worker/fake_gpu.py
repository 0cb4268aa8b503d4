"""The scripted fake GPU, from inside a plugin: "allocate" and "free" GPU memory
on the fake device the host reads, for tests and the demo.

The host sets ``CJM_FAKE_GPU`` to the fake's folder and pins the worker with
``CUDA_VISIBLE_DEVICES``, as it would a real GPU. ``allocate(mb)`` then records
that this process holds ``mb`` more on its device (``usage/<pid>.json``); the
host's next sample sees it, as NVML would see a CUDA allocation. An allocation
larger than what is free there, or one that meets a scripted out-of-memory
(a file in ``oom/``), raises :class:`FakeOutOfMemory`, a
:class:`~cjm_worker.errors.PluginResourceError` with the numbers, as a plugin
catching ``torch.cuda.OutOfMemoryError`` would raise it.

Without ``CJM_FAKE_GPU`` every function raises ``RuntimeError``: a plugin that
uses this module is a test plugin.
"""

import json
import os
from typing import Dict, Optional

from ._datatypes import ResourceShortfall
from .errors import PluginResourceError

__all__ = ["FakeOutOfMemory", "allocate", "free", "held", "device", "enabled"]

_VAR = "CJM_FAKE_GPU"


class FakeOutOfMemory(PluginResourceError):
    """The fake device had not enough free memory (or a scripted OOM hit)."""


def enabled() -> bool:
    """Whether the host runs this worker on the fake GPU."""
    return bool(os.environ.get(_VAR))


def _dir() -> str:
    folder = os.environ.get(_VAR)
    if not folder:
        raise RuntimeError(f"{_VAR} is not set: this worker does not run on the fake GPU")
    return folder


def device() -> int:
    """The host's index of the device this worker sees as CUDA device 0."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return int(visible) if visible.isdigit() else 0


def _usage_file(pid: int) -> str:
    return os.path.join(_dir(), "usage", f"{pid}.json")


def _read(path: str) -> Dict[str, float]:
    try:
        with open(path, encoding="utf-8") as f:
            return {str(k): float(v) for k, v in json.load(f).items()}
    except (OSError, ValueError):
        return {}


def _write(usage: Dict[str, float]) -> None:
    path = _usage_file(os.getpid())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(usage, f)
    os.replace(tmp, path)


def _total_mb(index: int) -> float:
    with open(os.path.join(_dir(), "devices.json"), encoding="utf-8") as f:
        devices = json.load(f)["devices"]
    return float(devices[index]["total_mb"])


def _used_by_others_mb(index: int) -> float:
    folder = os.path.join(_dir(), "usage")
    mine = f"{os.getpid()}.json"
    used = 0.0
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if name.endswith(".json") and name != mine:
            used += _read(os.path.join(folder, name)).get(str(index), 0.0)
    return used


def _take_scripted_oom() -> bool:
    folder = os.path.join(_dir(), "oom")
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        try:
            os.remove(os.path.join(folder, name))
        except FileNotFoundError:
            continue  # another worker took this one
        return True
    return False


def held(index: Optional[int] = None) -> float:
    """MB this process holds on its device (or on device ``index``)."""
    index = device() if index is None else index
    return _read(_usage_file(os.getpid())).get(str(index), 0.0)


def allocate(mb: float) -> None:
    """Holds ``mb`` more MB on this worker's device, or raises FakeOutOfMemory."""
    index = device()
    mine = held(index)
    free = _total_mb(index) - _used_by_others_mb(index) - mine
    scripted = _take_scripted_oom()
    if scripted or mb > free:
        why = "a scripted out-of-memory" if scripted else "not enough free memory"
        raise FakeOutOfMemory(
            f"fake GPU {index}: cannot allocate {mb:.0f} MB ({why}; {max(free, 0):.0f} MB free)",
            resource_shortfall=ResourceShortfall(
                resource="gpu_vram_mb", needed=float(mb), available=float(max(free, 0.0))
            ),
        )
    usage = _read(_usage_file(os.getpid()))
    usage[str(index)] = mine + float(mb)
    _write(usage)


def free(mb: Optional[float] = None) -> None:
    """Gives back ``mb`` MB on this worker's device, or everything it holds."""
    index = device()
    usage = _read(_usage_file(os.getpid()))
    left = 0.0 if mb is None else max(usage.get(str(index), 0.0) - float(mb), 0.0)
    usage[str(index)] = left
    _write(usage)
