"""`dlrc`: several satellites compress overlapping views of one scene with DLRC, exchanging
their signature lists over the inter-satellite links; the ground station rebuilds every view.

One kind, two roles, one option set (dlrc_settings.py has the table): a satellite that is one
of `satellites` runs dlrc_satellite.SatelliteSide, the `ground` node runs
dlrc_ground.GroundSide. Summary: the side's figures (satellite: sync round, bytes and bpp by
part, measured and emulated encode times, downlink; ground: per-satellite bytes, bpp, PSNR,
MS-SSIM, and their means); events: signature lists sent and received, payloads, decodes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from nodes.compute import ACCELERATORS
from nodes.dlrc.arbiter import SatelliteState
from nodes.errors import ContextError, WorkloadOptionsError
from nodes.workloads.base import NodeContext, Role, Workload
from nodes.workloads.dlrc_settings import DOWNLINK_MODES, FAMILIES, parse_common
from nodes.workloads.options import Options
from nodes.workloads.registry import register_workload

_SATELLITE_ONLY = ("link_quality", "energy_j", "downlink", "accelerator", "plain_baseline",
                   "sync_timeout_s")
_GROUND_ONLY = ("timeout_s",)


@register_workload("dlrc")
class Dlrc(Workload):
    """Satellite: analyse, exchange, arbitrate, encode, downlink. Ground: decode and score."""

    def __init__(self, ctx: NodeContext, options: Mapping[str, object] | None,
                 on_end: Callable[[Workload], None] | None = None):
        super().__init__(ctx, options, on_end)
        opts = Options(self.kind, options)
        s = parse_common(opts)
        if ctx.role is Role.SATELLITE:
            if ctx.name not in s.satellites:
                raise WorkloadOptionsError(f"workload {self.kind}: node {ctx.name} is not one "
                                           f"of the observers {s.satellites}")
            opts.ignore(*_GROUND_ONLY)
            downlink = opts.text("downlink", "contact")
            if downlink not in DOWNLINK_MODES:
                raise WorkloadOptionsError(f"workload {self.kind}: option downlink="
                                           f"{downlink!r}, expected one of "
                                           f"{', '.join(DOWNLINK_MODES)}")
            acc = opts.text("accelerator", None)
            if acc is not None and acc not in ACCELERATORS:
                raise WorkloadOptionsError(f"workload {self.kind}: option accelerator={acc!r}, "
                                           f"expected one of {', '.join(sorted(ACCELERATORS))}")
            state = SatelliteState(s.sat_id(ctx.name),
                                   opts.number("link_quality", 0.0, positive=False),
                                   opts.number("energy_j", 0.0, positive=False))
            from nodes.workloads.dlrc_satellite import SatelliteSide

            self._side: object = SatelliteSide(
                ctx, s, state=state, downlink=downlink, accelerator=acc,
                plain_baseline=opts.flag("plain_baseline", True),
                sync_timeout_s=opts.number("sync_timeout_s", 60.0))
        else:
            if ctx.name != s.ground:
                raise WorkloadOptionsError(f"workload {self.kind}: ground node {ctx.name} is "
                                           f"not option ground={s.ground!r}")
            opts.ignore(*_SATELLITE_ONLY)
            from nodes.workloads.dlrc_ground import GroundSide

            self._side = GroundSide(ctx, s, opts.number("timeout_s", None))
        opts.finish()
        if ctx.dataplane is None:
            raise WorkloadOptionsError(f"workload {self.kind} on {ctx.name}: the agent has no "
                                       "--data-ip, so no data plane")
        try:
            run = ctx.run_context()
        except ContextError as exc:
            raise WorkloadOptionsError(f"workload {self.kind}: {exc}") from None
        unknown = [n for n in [*s.satellites, s.ground] if n not in run.peers]
        if unknown:
            raise WorkloadOptionsError(f"workload {self.kind}: nodes {unknown} are not in the "
                                       f"run's peers ({', '.join(sorted(run.peers))})")
        for family in FAMILIES:
            ctx.metrics.add_family(family)

    def _prepare(self) -> None:
        """Nothing to acquire: the agent's data plane already listens."""

    def _run(self, stop: threading.Event) -> bool:
        return self._side.run(stop)  # type: ignore[attr-defined]

    def _cleanup(self) -> None:
        """Nothing held: the data plane belongs to the agent."""

    def _summary(self, elapsed_s: float) -> dict[str, object]:
        return self._side.summary()  # type: ignore[attr-defined]

    def _events(self) -> list[dict[str, object]]:
        return self._side.events()  # type: ignore[attr-defined]
