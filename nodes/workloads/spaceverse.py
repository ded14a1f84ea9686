"""`spaceverse`: satellite-ground synergistic VLM inference (SpaceVerse and its baselines).

One kind, two roles, one option set (the orchestrator may send the same options everywhere):
on a satellite it runs W^s on its share of the questions with the method's rule and offloads
over the data plane while in contact (spaceverse_satellite.py); on the ground it answers the
offloads with W^g (spaceverse_ground.py). Both hold each result until the emulated device time
has passed. torch and the models load in the job's thread, not in the start request.

Options, summaries and events: see nodes/README.md (`spaceverse`).

Satellite summary: `method, questions, answered, correct, accuracy, offloaded, bytes_offloaded,
unanswered, mean_latency_s, mean_time_to_answer_s, mean_onboard_s, ...`; events: one record
per question (decision, exit stage, bytes, latency split, times in unix ns, correctness).
Ground summary: `requests, bytes_received, by_satellite, replies, mean_ground_device_s, ...`;
events: one per request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nodes.compute import ACCELERATORS
from nodes.errors import ContextError, WorkloadOptionsError
from nodes.workloads.base import NodeContext, Role, Workload
from nodes.workloads.options import Options
from nodes.workloads.registry import register_workload
from nodes.workloads.spaceverse_metrics import FAMILIES

METHODS = ("spaceverse", "satellite-only", "ground-only", "tabi", "ai-rg", "g-image",
           "g-answer")
WITH_NETS = ("spaceverse", "g-image", "g-answer")
_SAT_ONLY = ("onboard_model", "confidence", "questions", "ground", "thresholds",
             "ablation_threshold", "tabi_threshold", "alpha", "beta", "link_rate_mbps",
             "link_delay_ms", "answer_timeout_s")
_GROUND_ONLY = ("ground_model", "workers", "reply_timeout_s")
_QUESTION_KEYS = ("id", "prompt", "answer", "image")


def _spec(opts: Options, name: str) -> str:
    from nodes.models.errors import ModelError
    from nodes.models.vlm.loader import parse_vlm_spec

    spec = opts.text(name)
    try:
        parse_vlm_spec(spec)
    except ModelError as exc:
        raise WorkloadOptionsError(f"workload spaceverse: option {name}: {exc}") from None
    return spec


def check_questions(raw: object) -> list[dict[str, Any]]:
    """The `questions` option as a list of dicts with unique ids and existing image files."""
    if not isinstance(raw, list) or not raw:
        raise WorkloadOptionsError(f"workload spaceverse: option questions={raw!r:.80}, "
                                   "expected a non-empty list of question objects")
    seen: set[str] = set()
    out = []
    for i, q in enumerate(raw):
        if not isinstance(q, dict) or any(k not in q for k in _QUESTION_KEYS):
            raise WorkloadOptionsError(f"workload spaceverse: questions[{i}]={q!r:.120}, "
                                       f"expected an object with {', '.join(_QUESTION_KEYS)}")
        if str(q["id"]) in seen:
            raise WorkloadOptionsError(f"workload spaceverse: questions[{i}].id={q['id']!r} "
                                       "repeats an earlier id")
        if not Path(str(q["image"])).is_file():
            raise WorkloadOptionsError(f"workload spaceverse: questions[{i}].image="
                                       f"{q['image']!r}, expected an existing image file")
        crop = q.get("crop")
        if crop is not None and (not isinstance(crop, list) or len(crop) != 4
                                 or not all(isinstance(v, int) for v in crop)):
            raise WorkloadOptionsError(f"workload spaceverse: questions[{i}].crop={crop!r}, "
                                       "expected [x0, y0, x1, y1] in pixels")
        seen.add(str(q["id"]))
        out.append({**q, "id": str(q["id"])})
    return out


def _load_question_image(q: dict[str, Any]) -> Any:
    from nodes.models.vlm.small import load_image

    img = load_image(Path(q["image"]))
    if q.get("crop") is not None:
        x0, y0, x1, y1 = q["crop"]
        img = img[:, y0:y1, x0:x1].contiguous()
    return img


@register_workload("spaceverse")
class SpaceVerse(Workload):
    """Satellite: W^s + the method's rule + contact-gated offloads. Ground: W^g, answers."""

    def __init__(self, ctx: NodeContext, options: Mapping[str, object] | None,
                 on_end: Callable[[Workload], None] | None = None):
        super().__init__(ctx, options, on_end)
        opts = Options(self.kind, options)
        self.method = opts.text("method", "spaceverse")
        if self.method not in METHODS:
            raise WorkloadOptionsError(f"workload spaceverse: option method={self.method!r}, "
                                       f"expected one of {', '.join(METHODS)}")
        self.timing_mode = opts.text("timing", "small")
        if self.timing_mode not in ("small", "paper"):
            raise WorkloadOptionsError(f"workload spaceverse: option timing="
                                       f"{self.timing_mode!r}, expected 'small' or 'paper'")
        self.accelerators = {}
        for name, default in (("onboard_accelerator", "jetson-agx-xavier"),
                              ("ground_accelerator", "rtx-3090")):
            acc = opts.text(name, default)
            if acc not in ACCELERATORS:
                raise WorkloadOptionsError(f"workload spaceverse: option {name}={acc!r}, "
                                           f"expected one of {', '.join(sorted(ACCELERATORS))}")
            self.accelerators[name] = acc
        self.efficiency = opts.number("efficiency", 0.5)
        if self.efficiency > 1:
            raise WorkloadOptionsError(f"workload spaceverse: option efficiency="
                                       f"{self.efficiency}, expected 0 < e <= 1")
        self.max_new_tokens = opts.integer("max_new_tokens", 8, low=1, high=256)
        self.hold = opts.flag("hold", True)
        self.send_timeout_s = opts.number("send_timeout_s", 30.0)
        self.torch_threads = opts.integer("torch_threads", 1, low=1, high=64)
        if ctx.dataplane is None:
            raise WorkloadOptionsError(f"workload spaceverse on {ctx.name}: the agent has no "
                                       "--data-ip, so no data plane")
        try:
            run = ctx.run_context()
        except ContextError as exc:
            raise WorkloadOptionsError(f"workload spaceverse: {exc}") from None
        if ctx.role is Role.SATELLITE:
            opts.ignore(*_GROUND_ONLY)
            self._side: Any = self._satellite(opts, run.peers)
        else:
            opts.ignore(*_SAT_ONLY)
            self._side = self._ground(opts)
        opts.finish()
        for fam in FAMILIES:
            ctx.metrics.add_family(fam)

    # the two roles ---------------------------------------------------------------------------
    def _timing(self) -> Any:
        from nodes.spaceverse.pipeline import Timing

        return Timing(self.accelerators["onboard_accelerator"],
                      self.accelerators["ground_accelerator"], self.efficiency, "small"
                      if self.timing_mode == "small" else "paper")

    def _satellite(self, opts: Options, peers: Mapping[str, str]) -> Any:
        from nodes.workloads.spaceverse_satellite import SatelliteConfig, SatelliteSide

        onboard_spec = _spec(opts, "onboard_model")
        nets_dir = opts.text("confidence", None)
        if self.method in WITH_NETS:
            if nets_dir is None:
                raise WorkloadOptionsError(f"workload spaceverse: method {self.method} needs "
                                           "option confidence (the trained nets' folder)")
            if not Path(nets_dir).is_dir():
                raise WorkloadOptionsError(f"workload spaceverse: option confidence="
                                           f"{nets_dir!r}, expected an existing folder")
        questions = check_questions(opts.value("questions", None))
        ground = opts.text("ground")
        if ground not in peers:
            raise WorkloadOptionsError(f"workload spaceverse: option ground={ground!r}, "
                                       f"expected one of: {', '.join(sorted(peers))}")
        thresholds = opts.value("thresholds", [0.5, 0.4])
        if not isinstance(thresholds, list) or not thresholds or not all(
                type(t) in (int, float) and 0 <= t <= 1 for t in thresholds):
            raise WorkloadOptionsError(f"workload spaceverse: option thresholds={thresholds!r}, "
                                       "expected a list of numbers in [0, 1]")
        knobs = {"ablation_threshold": opts.number("ablation_threshold", 0.5),
                 "tabi_threshold": opts.number("tabi_threshold", 0.6),
                 "alpha": opts.number("alpha", 0.35, positive=False),
                 "beta": opts.number("beta", 0.55)}
        rate_bps = opts.number("link_rate_mbps", 110.67) * 1e6
        delay_s = opts.number("link_delay_ms", 20.0, positive=False) / 1e3
        cfg = SatelliteConfig(self.method, ground, questions, self.send_timeout_s,
                              opts.number("answer_timeout_s", 60.0), self.hold)

        def build() -> Any:
            import torch

            from nodes.models.vlm.loader import load_vlm
            from nodes.spaceverse.methods import NET_OF_METHOD, OnboardRunner
            from nodes.spaceverse.pipeline import PipelineConfig
            from nodes.spaceverse.preprocess import PreprocessConfig
            from nodes.spaceverse.store import load_nets

            torch.set_num_threads(self.torch_threads)
            nets = (load_nets(Path(nets_dir), [NET_OF_METHOD[self.method]])
                    if self.method in WITH_NETS else None)
            pcfg = PipelineConfig(tuple(float(t) for t in thresholds),
                                  knobs["ablation_threshold"], knobs["tabi_threshold"],
                                  PreprocessConfig(alpha=knobs["alpha"], beta=knobs["beta"]),
                                  max_new_tokens=self.max_new_tokens)
            return OnboardRunner(self.method, load_vlm(onboard_spec), nets, self._timing(), pcfg,
                                 link_rate_bps=rate_bps, link_delay_s=delay_s)

        return SatelliteSide(self.ctx, cfg, build, _load_question_image)

    def _ground(self, opts: Options) -> Any:
        from nodes.workloads.spaceverse_ground import GroundSide

        ground_spec = _spec(opts, "ground_model")
        workers = opts.integer("workers", 1, low=1, high=64)

        def build() -> Any:
            import torch

            from nodes.models.vlm.loader import load_vlm
            from nodes.spaceverse.methods import GroundRunner
            from nodes.spaceverse.pipeline import PipelineConfig

            torch.set_num_threads(self.torch_threads)
            return GroundRunner(load_vlm(ground_spec), self._timing(),
                                PipelineConfig(max_new_tokens=self.max_new_tokens))

        return GroundSide(self.ctx, build, workers=workers, hold=self.hold,
                          reply_timeout_s=opts.number("reply_timeout_s", 60.0),
                          send_timeout_s=self.send_timeout_s)

    # lifecycle -------------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Nothing to acquire: the agent's data plane already listens; models load in _run."""

    def _run(self, stop: threading.Event) -> bool:
        return bool(self._side.run(stop))

    def _cleanup(self) -> None:
        """Nothing held: the side's threads end with its run."""

    def progress(self) -> dict[str, object] | None:
        if self.ctx.role is Role.SATELLITE:
            return {"done": len(self._side.records), "total": len(self._side.cfg.questions),
                    "unit": "questions"}
        return {"done": len(self._side.records), "total": None, "unit": "requests"}

    def _summary(self, elapsed_s: float) -> dict[str, object]:
        return {"role": self.ctx.role.value, "method": self.method, "timing": self.timing_mode,
                **self.accelerators, **self._side.summary()}

    def _events(self) -> list[dict[str, object]]:
        return self._side.events()
