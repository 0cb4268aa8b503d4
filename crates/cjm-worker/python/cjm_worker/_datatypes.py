"""The SDK's dataclasses and its one protocol.

They are re-exported by `cjm_worker.interface`, `cjm_worker.errors` and the
package root, which load this module only when one of these names is first
touched: `dataclasses` and `typing` together take tens of milliseconds to
import, far more than the rest of the SDK.

They are dataclasses (not plain classes) because the host's introspection
turns `WORKER_ENV` entries into manifest entries with `dataclasses.asdict`.
"""

import dataclasses
from typing import Any, Dict, List, Literal, Optional, Protocol, runtime_checkable

__all__ = ["FileBackedDTO", "ConfigOption", "FieldOptions", "EnvVarSpec", "ResourceShortfall"]


@runtime_checkable
class FileBackedDTO(Protocol):
    """A value that crosses the worker boundary as a temporary file.

    Anything with a `to_temp_file()` method satisfies it, including objects
    written for cjm-plugin-system.
    """

    def to_temp_file(self) -> str:
        """Write the data to a temporary file and return its absolute path."""
        ...


@dataclasses.dataclass
class ConfigOption:
    """One currently valid value of a dynamic config field."""

    #: The value stored in the config, e.g. ``"gemini-2.5-flash"``.
    value: Any
    #: What a UI shows for it, e.g. ``"Gemini 2.5 Flash"``.
    label: str
    #: Anything else a UI may use: token limits, a description, ...
    metadata: Dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class FieldOptions:
    """The live option domain of one dynamic config field.

    Returned by `PluginInterface.get_config_options()`. It is kept out of the
    static config schema on purpose: the schema is hashed to detect drift, and
    a model list fetched from an API would make every such plugin drift.
    """

    #: The values currently valid for the field.
    options: List[ConfigOption]
    #: Field constraints derived from the live state (e.g. a new maximum).
    constraints: Dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class EnvVarSpec:
    """One environment variable a plugin's worker reads at start-up.

    A plugin declares its contract as a class attribute,
    ``WORKER_ENV: ClassVar[List[EnvVarSpec]]``, which the host reads off the
    class (without instantiating it) when it installs the plugin. Values are
    fixed when the worker is spawned, so changing one means respawning the
    worker (a reload), never a `reconfigure`.

    * ``secret=True``: the value comes from the secret store, is injected into
      this plugin's worker only, and is never shown, logged or stored in a
      manifest. A secret must not carry a `default`: a baked-in secret is a
      leak.
    * ``secret=False``: a visible value (operator override, then the
      manifest's ``install.env_vars``, then `default`).

    `options` is reserved for visible variables with a finite domain.
    """

    #: The variable's name, e.g. ``"GEMINI_API_KEY"``.
    name: str
    #: Whether the value comes from the secret store (and is masked).
    secret: bool = False
    #: Whether the worker can do useful work without it.
    required: bool = False
    #: A display label.
    label: str = ""
    #: Help text.
    description: str = ""
    #: Default value; visible variables only.
    default: Optional[str] = None
    #: Finite domain of a visible variable (reserved).
    options: Optional[List[str]] = None


@dataclasses.dataclass
class ResourceShortfall:
    """How much of a resource a plugin needed and how much was available."""

    #: Which resource ran short.
    resource: Literal["gpu_vram_mb", "system_ram_mb", "disk_mb"]
    #: The amount the plugin needed.
    needed: float
    #: The amount available when it failed.
    available: float
