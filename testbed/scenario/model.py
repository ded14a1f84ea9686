"""The scenario schema: what a run emulates, as validated data (no resources are created here).

Every quantity carries its unit in its name. Unknown keys are errors. Cross-field rules (exactly
one constellation source, unique station names, ranges) live in validators so that a bad file
fails before anything is created. `testbed/scenario/README.md` documents every field.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class Strict(BaseModel):
    """Base: unknown keys are errors, values are not coerced silently from wrong types."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _kebab(value: str, what: str) -> str:
    if not KEBAB.match(value):
        raise ValueError(f"{what} '{value}' must be kebab-case (lowercase letters, digits, '-')")
    return value


Range2 = Annotated[list[float], Field(min_length=2, max_length=2)]


class ShellSelection(Strict):
    """Orbital shell filter: mean altitude and/or inclination within [min, max]."""

    altitude_km: Range2 | None = None
    inclination_deg: Range2 | None = None

    @field_validator("altitude_km", "inclination_deg")
    @classmethod
    def _ordered(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and v[0] > v[1]:
            raise ValueError(f"range [{v[0]}, {v[1]}] must be [min, max]")
        return v


class Selection(Strict):
    """Which satellites of the source become nodes; filters apply in this order, then `count`."""

    name: str | None = Field(None, description="glob on the TLE name, e.g. 'STARLINK-1*'")
    ids: list[int] | None = Field(None, description="NORAD catalogue numbers (TLE) or indices")
    shell: ShellSelection | None = None
    visible_from: str | None = Field(
        None, description="keep satellites that see this ground station during the scenario, "
        "earliest first"
    )
    count: int | None = Field(None, gt=0, description="keep the first N after the filters")


class WalkerSpec(Strict):
    """Walker-delta constellation i:t/p/f."""

    planes: int = Field(gt=0)
    per_plane: int = Field(gt=0)
    phasing: int = Field(0, ge=0)
    altitude_km: float = Field(gt=100, lt=40_000)
    inclination_deg: float = Field(ge=0, le=180)

    @model_validator(mode="after")
    def _phasing_range(self) -> WalkerSpec:
        if self.phasing >= self.planes:
            raise ValueError(f"phasing={self.phasing}, expected 0 <= phasing < "
                             f"planes={self.planes}")
        return self


class ConstellationSpec(Strict):
    """Exactly one source: a TLE file or Walker-delta parameters; plus an optional selection."""

    tle: Path | None = None
    walker: WalkerSpec | None = None
    select: Selection = Selection()
    max_tle_age_days: float = Field(
        7.0, gt=0, description="warn when the epoch is further than this from the TLE epochs"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ConstellationSpec:
        if (self.tle is None) == (self.walker is None):
            raise ValueError("give exactly one of 'tle' (a TLE file) or 'walker' (parameters)")
        return self


class GroundStationSpec(Strict):
    name: str
    lat_deg: float = Field(ge=-90, le=90)
    lon_deg: float = Field(ge=-180, le=180)
    alt_m: float = Field(0.0, ge=-500, le=9000)
    min_elevation_deg: float = Field(25.0, ge=0, lt=90)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _kebab(v, "ground station name")


class LinkDirectionSpec(Strict):
    """Capacity and delay of one ground-link direction: a recorded trace or constant values."""

    trace: Path | None = Field(None, description="trace file (mahimahi, LeoReplayer, CSV)")
    trace_format: str | None = Field(None, description="format name; default: from the file name")
    delay_trace: Path | None = Field(None, description="one-way delay trace (LeoReplayer 10 ms)")
    rate_mbps: float | None = Field(None, gt=0)
    delay: Literal["propagation", "trace"] = Field(
        "propagation", description="one-way delay from geometry, or from the (delay) trace"
    )
    loss_ratio: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _capacity_source(self) -> LinkDirectionSpec:
        if (self.trace is None) == (self.rate_mbps is None):
            raise ValueError("give exactly one of 'trace' or 'rate_mbps'")
        if self.delay == "trace" and self.trace is None and self.delay_trace is None:
            raise ValueError("delay: trace needs 'trace' or 'delay_trace'")
        return self


class GroundLinksSpec(Strict):
    policy: str = Field("hold-until-set", description="ground-link selection policy")
    hysteresis_deg: float = Field(0.0, ge=0, le=30)
    downlink: LinkDirectionSpec = LinkDirectionSpec(rate_mbps=100.0)
    uplink: LinkDirectionSpec = LinkDirectionSpec(rate_mbps=10.0)

    @field_validator("policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        return _kebab(v, "policy")


class LinkBudgetSpec(Strict):
    """ISL link budget (DLRC / EdgeSpaceCom defaults); every constant can be changed here."""

    tx_power_dbm: float = 40.0
    tx_gain_dbi: float = 35.0
    rx_gain_dbi: float = 35.0
    frequency_mhz: float = Field(20_000.0, gt=0)
    bandwidth_hz: float = Field(100e6, gt=0)
    noise_temperature_k: float = Field(290.0, gt=0)
    system_loss_db: float = Field(10.0, ge=0)
    overhead_ratio: float = Field(0.2, ge=0, lt=1)


class IslSpec(Strict):
    pattern: Literal["plus-grid", "none"] = "plus-grid"
    max_range_km: float = Field(3000.0, gt=0)
    grazing_altitude_km: float = Field(80.0, ge=0)
    capacity: Literal["link-budget", "constant"] = "link-budget"
    rate_mbps: float | None = Field(None, gt=0, description="with capacity: constant")
    link_budget: LinkBudgetSpec = LinkBudgetSpec()
    delay: Literal["propagation", "none"] = Field(
        "propagation", description="ISL one-way delay from geometry, or none (rate-only links; "
        "routes still prefer short paths)")
    shaper: Literal["auto", "userspace", "kernel"] = Field(
        "auto", description="what shapes ISLs: the kernel's htb (no userspace hop; delay needs "
        "netem) or the userspace shaper; auto: kernel where the kernel can do everything the "
        "links need (netem present, or delay: none), userspace otherwise")

    @model_validator(mode="after")
    def _constant_rate(self) -> IslSpec:
        if self.capacity == "constant" and self.rate_mbps is None:
            raise ValueError("capacity: constant needs 'rate_mbps'")
        return self


class LinksSpec(Strict):
    ground: GroundLinksSpec = GroundLinksSpec()
    isl: IslSpec = IslSpec()


class TimelineSpec(Strict):
    """How finely link delay/capacity changes are emitted."""

    step_s: float = Field(1.0, gt=0, le=600, description="sampling step of the geometry")
    delay_threshold_us: int = Field(100, ge=0, description="emit a delay change above this")
    rate_threshold_ratio: float = Field(0.01, ge=0, description="emit a rate change above this")


class ProfileSpec(Strict):
    """A custom device profile: cores, per-core speed vs the reference core, memory."""

    cores: float = Field(gt=0, le=256)
    core_speed_vs_reference: float = Field(gt=0, le=64)
    memory_mib: int = Field(gt=0)
    source: str = "custom profile from the scenario"


class NodeRoleSpec(Strict):
    profile: str
    restart_after_s: float | None = Field(
        None, gt=0, description="after `testbed fault kill-node`, bring the node back (links, "
        "agent, workload) after this many wall seconds; none: it stays down")

    @field_validator("profile")
    @classmethod
    def _profile(cls, v: str) -> str:
        return _kebab(v, "profile")


class NodesSpec(Strict):
    satellite: NodeRoleSpec = NodeRoleSpec(profile="jetson-agx-xavier")
    ground: NodeRoleSpec = NodeRoleSpec(profile="gs-server")
    profiles: dict[str, ProfileSpec] = Field(default_factory=dict)
    agents: Literal["auto", "eager", "on-demand"] = Field(
        "auto", description="when node agents start: with `up` on every node (eager), when a "
        "job first needs the node (on-demand), or eager up to 100 nodes (auto)")


class BackendSpec(Strict):
    kind: Literal["netns", "libvirt", "remote"] = Field(
        "netns", description="what a satellite node is: a namespace, a libvirt VM, a board")
    ground: Literal["netns", "remote"] = Field(
        "netns", description="what a ground station is: a namespace or the GPU server (remote)")
    options: dict[str, object] = Field(
        default_factory=dict, description="backend-specific settings (e.g. libvirt_uri, image)")
    ovs_datapath: Literal["netdev", "system"] = "netdev"
    routing: Literal["controller", "static"] = "controller"
    mgmt_subnet: str = Field(
        "auto", description="the agents' management network (IPv4 CIDR, on the host): `auto` "
        "takes the first of 172.30/16, 172.29/16, ... that no host address or route overlaps, "
        "so two runs on one host do not collide")
    inventory: Path | None = Field(None, description="lab inventory (libvirt/remote backends)")
    prometheus: Literal["run", "external", "none"] = Field(
        "run", description="who stores the run's metrics: a Prometheus started per run (TSDB "
        "in the run directory), the lab's server at `prometheus_url`, or none")
    prometheus_url: str | None = Field(
        None, description="base URL of the lab's Prometheus (with prometheus: external)")

    @field_validator("mgmt_subnet")
    @classmethod
    def _mgmt_subnet(cls, v: str) -> str:
        if v == "auto":
            return v
        try:
            net = ipaddress.IPv4Network(v, strict=True)
        except ValueError as exc:
            raise ValueError(f"mgmt_subnet {v!r}: expected `auto` or an IPv4 network such as "
                             f"172.30.0.0/16 ({exc})") from None
        if net.prefixlen > 28:
            raise ValueError(f"mgmt_subnet {v}: /{net.prefixlen} is too small, expected /28 or "
                             "larger")
        return v

    @model_validator(mode="after")
    def _prometheus_url(self) -> BackendSpec:
        if self.prometheus == "external" and not self.prometheus_url:
            raise ValueError("prometheus: external needs prometheus_url (the lab server's base "
                             "URL, e.g. http://prometheus.lab:9090)")
        if self.prometheus != "external" and self.prometheus_url is not None:
            raise ValueError(f"prometheus_url is only read with prometheus: external, not "
                             f"{self.prometheus!r}")
        if self.prometheus_url is not None and not self.prometheus_url.startswith(
                ("http://", "https://")):
            raise ValueError(f"prometheus_url {self.prometheus_url!r}, expected http(s)://...")
        return self


class WorkloadSpec(Strict):
    """What runs on the nodes; `options` are validated by the workload named in `kind`."""

    kind: str = "none"
    options: dict[str, object] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        return _kebab(v, "workload kind")


class OutputsSpec(Strict):
    dir: str = Field("runs", description="run directories go here (relative: to the working "
                     "directory)")
    timeline: list[Literal["jsonl", "parquet"]] = Field(default_factory=lambda: ["jsonl"])
    plots: bool = Field(False, description="write ground tracks and the contact Gantt into "
                        "the run directory (plots/topology*.png) before the run")


class Scenario(Strict):
    """A whole scenario file."""

    name: str = Field(max_length=40)
    epoch: datetime = Field(description="scenario time zero, UTC")
    duration_s: float = Field(gt=0, le=30 * 86400)
    speed: float = Field(1.0, gt=0, le=1000, description=">1 runs scenario time faster")
    seed: int = 0
    constellation: ConstellationSpec
    ground_stations: list[GroundStationSpec] = Field(default_factory=list)
    links: LinksSpec = LinksSpec()
    timeline: TimelineSpec = TimelineSpec()
    nodes: NodesSpec = NodesSpec()
    backend: BackendSpec = BackendSpec()
    workload: WorkloadSpec = WorkloadSpec()
    outputs: OutputsSpec = OutputsSpec()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _kebab(v, "scenario name")

    @field_validator("epoch")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("epoch needs a time zone; write UTC as '2024-07-16T00:00:00Z'")
        return v.astimezone(UTC)

    @field_validator("backend", mode="before")
    @classmethod
    def _backend_shorthand(cls, v: object) -> object:
        return {"kind": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _visible_from_known(self) -> Scenario:
        wanted = self.constellation.select.visible_from
        names = [gs.name for gs in self.ground_stations]
        if wanted is not None and wanted not in names:
            raise ValueError(
                f"constellation.select.visible_from='{wanted}' is not a ground station; "
                f"choose: {', '.join(names) or '(none defined)'}"
            )
        return self

    @field_validator("ground_stations")
    @classmethod
    def _unique_stations(cls, v: list[GroundStationSpec]) -> list[GroundStationSpec]:
        seen: set[str] = set()
        for gs in v:
            if gs.name in seen:
                raise ValueError(f"ground station name '{gs.name}' is used twice")
            seen.add(gs.name)
        return v
