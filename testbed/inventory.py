"""The lab inventory: which machines a run may use, how to reach them, and what they carry.

Owns the inventory schema (hosts with role, SSH address, user, key, known_hosts, board profile,
accelerators, fabric port, libvirt URI) and its loader, with the same `file:line: field: message`
errors as scenario files. Holds no secrets: keys are named by path and passwords are refused.
Does not connect to anything (testbed.backends.remote does).

Example (the documented example is experiments/lab/inventory.example.yaml):

    inv = load_inventory("lab-inventory.yaml")
    inv.host("jetson1").ssh_address    # "192.168.10.21:22"
    [h.name for h in inv.by_role("board")]
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from testbed.errors import InputError, ScenarioError
from testbed.profiles import PROFILES
from testbed.scenario.yamlsource import Loc, SourceMap, load_yaml_with_lines

Role = Literal["hypervisor", "board", "ground-server"]
_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")


class InventoryError(InputError):
    """An inventory file does not validate, or a host it names does not exist."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Accelerator(_Strict):
    """An accelerator a host carries: its kind (kebab-case, e.g. `cuda-gpu`) and how many."""

    kind: str
    count: int = Field(1, ge=1)

    @field_validator("kind")
    @classmethod
    def _kebab(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"accelerator kind '{v}' must be kebab-case, e.g. 'cuda-gpu'")
        return v


class InventoryHost(_Strict):
    """One machine of the lab. Paths may be relative to the inventory file; `~` is expanded."""

    name: str
    role: Role
    address: str = Field(min_length=1, description="SSH host name or IP")
    port: int = Field(22, ge=1, le=65535)
    user: str = Field(min_length=1)
    key_path: Path = Field(description="private key file (never a password)")
    known_hosts: Path = Field(description="known_hosts file; unknown or changed keys refused")
    board: str | None = Field(None, description="device profile name (testbed.profiles)")
    accelerators: list[Accelerator] = Field(default_factory=list)
    fabric_port: str | None = Field(
        None, description="orchestrator-side interface joining this host to the fabric")
    data_interface: str | None = Field(
        None, description="the host's own NIC on the fabric: gets the plan's data IP and MAC")
    libvirt_uri: str | None = None
    python: str = Field("python3", min_length=1, description="interpreter name or path there")
    work_dir: str = Field("/tmp/testbed", description="absolute folder for per-run folders")
    password: Any = Field(None, exclude=True, description="refused: use key_path")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"host name '{v}' must be kebab-case (lowercase letters, digits, '-')")
        return v

    @field_validator("password")
    @classmethod
    def _no_password(cls, v: Any) -> None:
        if v is not None:
            raise ValueError("passwords are not accepted (they would sit in a file and in the "
                             "run's records); give key_path to a private key and add its "
                             "public key to the host's authorized_keys")
        return None

    @field_validator("board")
    @classmethod
    def _profile(cls, v: str | None) -> str | None:
        if v is not None and v not in PROFILES:
            raise ValueError(f"unknown device profile '{v}'; choose: {', '.join(sorted(PROFILES))}")
        return v

    @field_validator("fabric_port", "data_interface")
    @classmethod
    def _ifname(cls, v: str | None) -> str | None:
        if v is not None and not _IFNAME.match(v):
            raise ValueError(f"'{v}' is not an interface name (1-15 characters of letters, "
                             "digits, '_', '.', ':', '-')")
        return v

    @field_validator("work_dir")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/") or v.rstrip("/") == "":
            raise ValueError(f"work_dir '{v}' must be an absolute folder other than '/'")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _by_role(self) -> InventoryHost:
        if self.role == "board" and self.board is None:
            raise ValueError(f"host {self.name}: role board needs `board` (a device profile)")
        if self.libvirt_uri is not None and self.role != "hypervisor":
            raise ValueError(f"host {self.name}: libvirt_uri is only for role hypervisor "
                             f"(got role {self.role})")
        return self

    @property
    def ssh_address(self) -> str:
        """`address:port` as errors and logs name it."""
        return f"[{self.address}]:{self.port}" if ":" in self.address else \
            f"{self.address}:{self.port}"


class Inventory(_Strict):
    """The lab's hosts, unique by name."""

    hosts: list[InventoryHost] = Field(min_length=1)

    @field_validator("hosts")
    @classmethod
    def _unique(cls, v: list[InventoryHost]) -> list[InventoryHost]:
        index = _first_duplicate(v)
        if index is not None:
            raise ValueError(f"host name '{v[index].name}' appears twice")
        return v

    def host(self, name: str) -> InventoryHost:
        """The host `name`; InventoryError listing the known names otherwise."""
        for h in self.hosts:
            if h.name == name:
                return h
        raise InventoryError(f"unknown host {name!r}; the inventory has: "
                             + ", ".join(h.name for h in self.hosts), field="hosts")

    def by_role(self, role: Role) -> list[InventoryHost]:
        """Hosts of `role`, in file order."""
        return [h for h in self.hosts if h.role == role]


def _first_duplicate(hosts: list[InventoryHost]) -> int | None:
    seen: set[str] = set()
    for i, h in enumerate(hosts):
        if h.name in seen:
            return i
        seen.add(h.name)
    return None


def _owner(loc: Loc) -> type[BaseModel]:
    """The model class that owns the last key of `loc` (for listing valid keys)."""
    if loc and loc[0] == "hosts":
        return Accelerator if "accelerators" in loc else InventoryHost
    return Inventory


def _describe(error: Any, loc: Loc) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        valid = sorted(k for k in _owner(loc[:-1]).model_fields if k != "password")
        return f"unknown key '{loc[-1]}'; valid keys here: {', '.join(valid)}"
    if kind == "missing":
        return "required field is missing"
    msg = str(error["msg"]).removeprefix("Value error, ")
    if kind in {"value_error", "assertion_error"}:
        return msg
    return f"{msg} (got {error.get('input')!r})"


def _resolve(host: InventoryHost, base: Path) -> InventoryHost:
    def absolute(p: Path) -> Path:
        p = p.expanduser()
        return p if p.is_absolute() else (base / p).resolve()
    return host.model_copy(update={"key_path": absolute(host.key_path),
                                   "known_hosts": absolute(host.known_hosts)})


def inventory_from_data(data: Any, source: SourceMap) -> Inventory:
    """Validate parsed YAML; InventoryError with one `file:line: field: message` line per
    problem (the error's path/line/field are those of the first)."""
    if not isinstance(data, dict):
        raise InventoryError("the top level must be a mapping with `hosts:`", path=source.path,
                             line=1)
    hosts = data.get("hosts")
    if isinstance(hosts, list):  # point at the second occurrence, not at `hosts:`
        names = [h.get("name") if isinstance(h, dict) else None for h in hosts]
        for i, name in enumerate(names):
            if name is not None and name in names[:i]:
                raise InventoryError(f"host name '{name}' appears twice", path=source.path,
                                     line=source.line_of(("hosts", i, "name")),
                                     field=f"hosts.{i}.name")
    try:
        # YAML gives str for paths; strict mode would refuse them, so paths validate in lax mode
        inv = Inventory.model_validate(_paths_as_path(data))
    except ValidationError as exc:
        lines: list[str] = []
        first: tuple[int | None, str] | None = None
        for error in exc.errors():
            loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and "[" in p))
            line = source.line_of(loc)
            field = ".".join(str(p) for p in loc) or "(top level)"
            first = first or (line, field)
            where = f"{source.path}:{line}" if line else str(source.path)
            lines.append(f"{where}: {field}: {_describe(error, loc)}")
        err = InventoryError("\n".join(lines))
        err.path, err.line, err.field = str(source.path), first[0] if first else None, \
            first[1] if first else None
        raise err from None
    base = source.path.resolve().parent
    return Inventory(hosts=[_resolve(h, base) for h in inv.hosts])


def _paths_as_path(data: dict[str, Any]) -> dict[str, Any]:
    """Turn the path-valued strings of each host into Path (the schema is strict otherwise)."""
    hosts = data.get("hosts")
    if not isinstance(hosts, list):
        return data
    out = []
    for h in hosts:
        if isinstance(h, dict):
            h = {k: (Path(v) if k in ("key_path", "known_hosts") and isinstance(v, str) else v)
                 for k, v in h.items()}
        out.append(h)
    return {**data, "hosts": out}


def load_inventory(path: str | Path) -> Inventory:
    """Parse and validate an inventory file. Raises InventoryError naming file, line, field."""
    try:
        data, source = load_yaml_with_lines(path)
    except ScenarioError as exc:  # the YAML layer is shared with scenarios
        raise InventoryError(exc.message, path=exc.path, line=exc.line, field=exc.field) from None
    return inventory_from_data(data, source)
