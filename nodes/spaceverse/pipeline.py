"""In-process SpaceVerse pipeline: the six methods over labelled samples, with a latency split.

Owns running the decision rules against W^s, W^g and a link model and accounting for what each
method costs: on-board compute (emulated with `nodes.compute`), transfer (bytes / rate + one-way
delay) and ground compute (emulated). It does not move bytes over a network: the emulated
constellation runs the same rules later through the node agents.

Methods (`METHODS`): `spaceverse` (g~, progressive early exit, preprocessed image sent),
`satellite-only`, `ground-only` (raw image sent), `tabi` and `ai-rg` (raw image sent when
offloading), and the ablations `g-image` (g) and `g-answer` (g') with the preprocessed image.

Each model runs once per sample (W^s in full, W^g on the raw and on the preprocessed image);
each method then takes what its rule would have computed, so all methods see the same outputs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from nodes.compute import (
    DEFAULT_EFFICIENCY,
    ModelWork,
    accelerator,
    generation_time_s,
    qwen2vl_work,
    roofline_s,
)
from nodes.models.vlm.base import VisionLanguageModel
from nodes.spaceverse.baselines import AIRGPolicy, tabi_confidence, tabi_offload
from nodes.spaceverse.confidence import ConfidenceNet, answer_similarity, run_onboard
from nodes.spaceverse.errors import SpaceVerseConfigError
from nodes.spaceverse.preprocess import PreprocessConfig, RegionScorer, plan_regions, to_wire
from nodes.spaceverse.wire import Region, WireImage, decode, encode, rebuild

__all__ = ["METHODS", "Item", "LinkModel", "MethodResult", "PipelineConfig", "Timing",
           "results_as_dicts", "run_pipeline", "summarise"]

METHODS = ("spaceverse", "satellite-only", "ground-only", "tabi", "ai-rg", "g-image", "g-answer")
_NETS = {"spaceverse": "g~", "g-image": "g", "g-answer": "g'"}


@dataclass(frozen=True)
class LinkModel:
    """A downlink of constant rate and one-way delay."""

    rate_bps: float
    delay_s: float

    def __post_init__(self) -> None:
        if self.rate_bps <= 0 or self.delay_s < 0:
            raise SpaceVerseConfigError(f"link: rate_bps={self.rate_bps} delay_s={self.delay_s}, "
                                        "expected rate > 0 and delay >= 0")

    def transfer_s(self, n_bytes: int) -> float:
        """Seconds to deliver `n_bytes`: serialisation plus propagation."""
        return 8 * n_bytes / self.rate_bps + self.delay_s


@dataclass(frozen=True)
class Timing:
    """Which accelerators and which model sizes the emulated compute times stand for.

    `model_size="small"`: the small models' own counted work. `"paper"`: Qwen2-VL-2B on board
    and Qwen2-VL-7B on the ground (the paper's pair), fed the small models' token counts.
    """

    onboard_accelerator: str = "jetson-agx-xavier"
    ground_accelerator: str = "rtx-3090"
    efficiency: float = DEFAULT_EFFICIENCY
    model_size: str = "small"

    def __post_init__(self) -> None:
        if self.model_size not in ("small", "paper"):
            raise SpaceVerseConfigError(f"timing: model_size={self.model_size!r}, "
                                        "expected 'small' or 'paper'")
        accelerator(self.onboard_accelerator)
        accelerator(self.ground_accelerator)

    def work(self, vlm: VisionLanguageModel, image: torch.Tensor, prompt: str,
             side: str) -> ModelWork:
        """The work the timing stands for on `side` ('onboard' or 'ground')."""
        if self.model_size == "small":
            return vlm.work(image, prompt)
        size = "2b" if side == "onboard" else "7b"
        # about 1.3 Qwen2 tokens per English word, plus the chat template's ~20 tokens
        return qwen2vl_work(size, tuple(image.shape[-2:]), int(1.3 * len(prompt.split())) + 20)


@dataclass(frozen=True)
class PipelineConfig:
    """Thresholds and options of the methods; the paper's defaults where it gives them."""

    thresholds: tuple[float, ...] = (0.5, 0.4)       # tau_i of g~
    ablation_threshold: float = 0.5                  # tau of g and g'
    tabi_threshold: float = 0.6
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    codec: str = "png"
    max_new_tokens: int = 8


@dataclass
class Item:
    """One labelled sample: image `[3, H, W]` in [0, 1], prompt, reference answer."""

    sample_id: str
    task: str
    qtype: str
    image: torch.Tensor
    prompt: str
    answer: str


@dataclass
class MethodResult:
    """What one method did with one sample."""

    method: str
    sample_id: str
    task: str
    qtype: str
    offload: bool
    exit_stage: int
    bytes_sent: int
    answer: str
    reference: str
    correct: bool
    onboard_s: float
    transfer_s: float
    ground_s: float
    latency_s: float
    timing_model: str


def _u8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _scorer_flops(image: torch.Tensor, prompt: str, scorer: RegionScorer,
                  cfg: PreprocessConfig):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        plan = plan_regions(image, prompt, scorer, cfg)
    return plan, float(fc.get_total_flops())


def run_pipeline(items: Iterable[Item], onboard: VisionLanguageModel,
                 ground: VisionLanguageModel, nets: dict[str, ConfidenceNet],
                 link: LinkModel, timing: Timing = Timing(),
                 cfg: PipelineConfig = PipelineConfig(), scorer: RegionScorer | None = None,
                 methods: Sequence[str] = METHODS, airg: AIRGPolicy | None = None,
                 progress=None) -> list[MethodResult]:
    """Run `methods` over `items`; `nets` maps 'g~', 'g', "g'" to trained confidence nets.

    `scorer` scores the regions (default: the on-board model's own encoders).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SpaceVerseConfigError(f"unknown methods {unknown}; choose: {', '.join(METHODS)}")
    missing = [_NETS[m] for m in methods if m in _NETS and _NETS[m] not in nets]
    if missing:
        raise SpaceVerseConfigError(f"confidence nets {missing} missing for methods {methods}")
    scorer = scorer or onboard
    airg = airg or AIRGPolicy()
    acc_s, acc_g = accelerator(timing.onboard_accelerator), accelerator(timing.ground_accelerator)
    eff = timing.efficiency
    out: list[MethodResult] = []
    for n, item in enumerate(items):
        img, prompt = item.image, item.prompt
        w_s = timing.work(onboard, img, prompt, "onboard")
        w_g = timing.work(ground, img, prompt, "ground")

        def t_on(tokens: int, w_s: ModelWork = w_s) -> float:
            return generation_time_s(w_s, tokens, acc_s, eff)

        def t_ground(tokens: int, w_g: ModelWork = w_g) -> float:
            return generation_time_s(w_g, tokens, acc_g, eff)

        full = onboard.generate(img, prompt, cfg.max_new_tokens)
        ans_s = onboard.decode(full)
        raw_bytes = len(encode(WireImage(img.shape[1], img.shape[2], 1, 1,
                                         [Region(0, 0, _u8(img))]), cfg.codec))
        g_raw = ground.generate(img, prompt, cfg.max_new_tokens)
        ans_g_raw = ground.decode(g_raw)
        pre = None
        if any(m in _NETS for m in methods):
            plan, pre_flops = _scorer_flops(img, prompt, scorer, cfg.preprocess)
            data = encode(to_wire(img, plan), cfg.codec)
            pre_img = _tensor(rebuild(decode(data)))
            g_pre = ground.generate(pre_img, prompt, cfg.max_new_tokens)
            pre = (len(data), roofline_s(pre_flops, 0.0, acc_s, eff), ground.decode(g_pre),
                   t_ground(g_pre.num_tokens))

        label = (f"{w_s.label}@{timing.onboard_accelerator}/"
                 f"{w_g.label}@{timing.ground_accelerator}")

        def result(method: str, offload: bool, stage: int, on_s: float, sent: int, tr_s: float,
                   gr_s: float, answer: str, item: Item = item, label: str = label
                   ) -> MethodResult:
            return MethodResult(method, item.sample_id, item.task, item.qtype, offload, stage,
                                sent, answer, item.answer, _norm(answer) == _norm(item.answer),
                                on_s, tr_s, gr_s, on_s + tr_s + gr_s, label)

        t_full = t_on(full.num_tokens)
        t_raw_ground = t_ground(g_raw.num_tokens)
        for m in methods:
            if m == "satellite-only":
                out.append(result(m, False, -1, t_full, 0, 0.0, 0.0, ans_s))
            elif m == "ground-only":
                out.append(result(m, True, -1, 0.0, raw_bytes, link.transfer_s(raw_bytes),
                                  t_raw_ground, ans_g_raw))
            elif m in ("tabi", "ai-rg"):
                conf = tabi_confidence(full.token_probs)
                if m == "tabi":
                    off = tabi_offload(full.token_probs, cfg.tabi_threshold)
                else:
                    airg.observe_rate(link.rate_bps)
                    off = airg.decide(conf, t_full, t_full, raw_bytes, link.delay_s,
                                      t_raw_ground, t_ref_s=max(t_full, 1e-6))
                    if off:
                        airg.observe_agreement(conf, answer_similarity(ans_s, ans_g_raw) > 0.99)
                if off:
                    out.append(result(m, True, -1, t_full, raw_bytes,
                                      link.transfer_s(raw_bytes), t_raw_ground, ans_g_raw))
                else:
                    out.append(result(m, False, -1, t_full, 0, 0.0, 0.0, ans_s))
            else:
                net = nets[_NETS[m]]
                taus = cfg.thresholds if m == "spaceverse" else (cfg.ablation_threshold,)
                d = run_onboard(onboard, net, img, prompt, taus, cfg.max_new_tokens)
                pre_bytes, pre_s, ans_pre, gr_s = pre
                on_s = t_on(d.tokens_generated) if d.tokens_generated or not d.offload \
                    else roofline_s(w_s.prefill_flops, w_s.prefill_bytes, acc_s, eff)
                if d.offload:
                    out.append(result(m, True, d.exit_stage, on_s + pre_s, pre_bytes,
                                      link.transfer_s(pre_bytes), gr_s, ans_pre))
                else:
                    out.append(result(m, False, d.exit_stage, on_s, 0, 0.0, 0.0,
                                      onboard.decode(d.generation)))
        if progress is not None:
            progress(n + 1)
    return out


def summarise(results: Sequence[MethodResult], by: tuple[str, ...] = ("method",)) -> list[dict]:
    """Accuracy, mean latency (and its split), mean bytes sent, offload rate per group."""
    groups: dict[tuple, list[MethodResult]] = defaultdict(list)
    for r in results:
        groups[tuple(getattr(r, k) for k in by)].append(r)
    rows = []
    for key, rs in groups.items():
        n = len(rs)
        row = dict(zip(by, key, strict=True))
        row.update(samples=n, accuracy=sum(r.correct for r in rs) / n,
                   mean_latency_s=sum(r.latency_s for r in rs) / n,
                   mean_onboard_s=sum(r.onboard_s for r in rs) / n,
                   mean_transfer_s=sum(r.transfer_s for r in rs) / n,
                   mean_ground_s=sum(r.ground_s for r in rs) / n,
                   mean_bytes_sent=sum(r.bytes_sent for r in rs) / n,
                   offload_rate=sum(r.offload for r in rs) / n)
        rows.append(row)
    return rows


def results_as_dicts(results: Sequence[MethodResult]) -> list[dict]:
    """Plain dicts (CSV/JSON rows)."""
    return [asdict(r) for r in results]
