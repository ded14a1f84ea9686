"""Train SkyMoE on the real labelled images: encoder, stage 0, stage I (LoRA), stage II (MoE).

Owns the training stages and the cache. The paper starts from pre-trained CLIP-ViT-L/14 and
Vicuna-1.5 and trains two stages; nothing pre-trained can be downloaded here, so the project
first makes its own stand-ins, then runs the paper's two stages on them:

- encoder: the CNN encoder with a linear head learns scene classification (EuroSAT + UC Merced
  training images), then is frozen for good (the CLIP stand-in);
- stage 0: adaptor + LLM trained from scratch on the training split (the stand-in for a
  pre-trained LLM with an aligned projector);
- stage I: LoRA (rank `lora_r`, paper 64) on W_q and W_v only; encoder, adaptor and every other
  weight frozen; the adapters are merged afterwards (the dense model `dense/`);
- stage II: every second FFN upcycled into `num_experts` copies with a linear top-k router;
  only the MoE layers (experts and routers) train, with loss = AR loss on the answer tokens +
  aux_alpha * sum over MoE layers of L_aux (`<name>/`).

Cache: `<out>/<name>/{config.json, weights.pt, provenance.json}`; provenance holds the data's
sha256, the split rule and seed, the settings, per-stage losses and wall times, the torch
version; a stage-II entry also holds its dense parent's provenance. Matching entries are
reused; `--force` retrains. One torch thread (two were slower on this shared machine).

    python -m nodes.models.skymoe.train --data DATA/images --out .cache/models/skymoe \
        [--experts 4] [--aux-alpha 0.01] [--augment cutout attribute]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nodes.models.errors import ModelConfigError
from nodes.models.skymoe import samples as sample_source
from nodes.models.skymoe.config import SkyMoEConfig
from nodes.models.skymoe.lora import add_lora, lora_parameters, merge_lora
from nodes.models.skymoe.net import SkyMoENet, upcycle_net, widen_net
from nodes.models.skymoe.tokens import TokenMap, build_vocab
from nodes.models.skymoe.vlm import load_net, save_net
from nodes.models.vlm.data import Sample, select_split
from nodes.models.vlm.small import load_sample_image
from nodes.models.vlm.train import data_sha256

__all__ = ["DenseSettings", "MoESettings", "Trainer", "main", "moe_name"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class DenseSettings:
    """Everything that changes the dense (stage I) model; recorded in its provenance."""

    source: str = "vlm-data"
    encoder_steps: int = 300
    base_steps: int = 1000
    stage1_steps: int = 300
    batch: int = 32
    lr: float = 2e-3
    lora_lr: float = 1e-3
    lora_r: int = 64
    input_px: int = 96
    dim: int = 128
    layers: int = 4
    heads: int = 4
    ffn_dim: int = 256
    seed: int = 0
    split_seed: int = 0
    eurosat_per_class: int = 150


@dataclass(frozen=True)
class MoESettings:
    """Stage II. `num_experts` 0 with `widen` > 1: the dense model at the MoE's active width
    (its every-second FFN widened `widen` times), trained the same way."""

    num_experts: int = 4
    top_k: int = 2
    aux_alpha: float = 0.01
    steps: int = 300
    lr: float = 1e-3
    batch: int = 32
    augment: tuple[str, ...] = ()
    widen: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_experts < 0 or (self.num_experts == 0) == (self.widen == 1):
            raise ModelConfigError(f"stage II: num_experts={self.num_experts} widen="
                                   f"{self.widen}, expected num_experts >= 1 (an MoE) or "
                                   "num_experts = 0 with widen >= 2 (a widened dense model)")
        if self.aux_alpha < 0 or self.steps < 0:
            raise ModelConfigError(f"stage II: aux_alpha={self.aux_alpha} steps={self.steps}, "
                                   "expected both >= 0")


def moe_name(s: MoESettings) -> str:
    """Cache name: `skymoe-e4`, `skymoe-e4-noaux`, `skymoe-e4-cutout`, `dense-wide2`,
    `skymoe-e4-1200steps`, `skymoe-e4-seed1`, ..."""
    name = f"skymoe-e{s.num_experts}" if s.num_experts else f"dense-wide{s.widen}"
    if s.num_experts and s.top_k != 2:
        name += f"-k{s.top_k}"
    if s.num_experts and s.aux_alpha == 0:
        name += "-noaux"
    if s.steps != MoESettings.steps:
        name += f"-{s.steps}steps"
    if s.seed:
        name += f"-seed{s.seed}"
    return "-".join([name, *s.augment])


def _cosine(step: int, steps: int, lr: float, warmup: int = 20) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _files_sha256(paths: Sequence[Path]) -> str:
    outer = hashlib.sha256()
    for p in sorted(set(paths)):
        outer.update(f"{p.name}:".encode())
        outer.update(hashlib.sha256(p.read_bytes()).digest())
    return outer.hexdigest()


@dataclass
class Trainer:
    """The samples, the token map and the frozen encoder's features, shared by the stages."""

    samples: list[Sample]
    settings: DenseSettings
    tokens: TokenMap
    log: Log = print
    feats: dict[str, torch.Tensor] = field(default_factory=dict)
    pairs: dict[tuple[str, str], tuple[list[int], list[int]]] = field(default_factory=dict)

    @classmethod
    def create(cls, samples: list[Sample], settings: DenseSettings, log: Log = print,
               tokenizer=None) -> Trainer:
        from nodes.models.vlm.qwen_tokenizer import build_qwen2_tokenizer

        tok = tokenizer or build_qwen2_tokenizer()
        vocab = build_vocab(tok, [t for s in samples for t in (s.prompt, s.answer)])
        return cls(samples, settings, TokenMap(tok, vocab), log)

    def config(self) -> SkyMoEConfig:
        s = self.settings
        return SkyMoEConfig(name="skymoe-dense", input_px=s.input_px, dim=s.dim, layers=s.layers,
                            heads=s.heads, ffn_dim=s.ffn_dim, vocab=self.tokens.vocab)

    @property
    def train_split(self) -> list[Sample]:
        return select_split(self.samples, "train", self.settings.split_seed)

    # --- encoder -------------------------------------------------------------------------
    def pretrain_encoder(self, net: SkyMoENet, rng: random.Random) -> dict:
        """Scene classification on the training images; then the encoder is frozen."""
        s = self.settings
        cls_samples = [x for x in self.train_split if x.qtype == "class"]
        if not cls_samples:
            raise ModelConfigError("encoder pre-training: no scene-classification samples in "
                                   "the training split (tasks eurosat-rgb, ucmerced)")
        classes = sorted({x.answer for x in cls_samples})
        images = {x.image_key: _resized(x, s.input_px) for x in cls_samples}
        head = nn.Linear(net.encoder.width, len(classes))
        params = [*net.encoder.parameters(), *head.parameters()]
        opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=1e-4)
        t0, losses = time.monotonic(), []
        net.encoder.train()
        for step in range(s.encoder_steps):
            for g in opt.param_groups:
                g["lr"] = _cosine(step, s.encoder_steps, s.lr)
            batch = [cls_samples[rng.randrange(len(cls_samples))] for _ in range(2 * s.batch)]
            x = torch.stack([images[b.image_key] for b in batch])
            flip = torch.rand(len(batch)) < 0.5
            x[flip] = x[flip].flip(-1)
            y = torch.tensor([classes.index(b.answer) for b in batch])
            loss = F.cross_entropy(head(net.encoder(x).mean(1)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if step % 100 == 0 or step == s.encoder_steps - 1:
                self.log(f"encoder step {step}/{s.encoder_steps} loss {losses[-1]:.3f} "
                         f"({time.monotonic() - t0:.0f} s)")
        net.encoder.eval()
        for p in net.encoder.parameters():
            p.requires_grad_(False)
        tail = losses[-20:] or [float("nan")]
        return {"classes": len(classes), "images": len(images),
                "final_loss": sum(tail) / len(tail), "wall_s": time.monotonic() - t0}

    @torch.no_grad()
    def encode(self, net: SkyMoENet, samples: Sequence[Sample]) -> None:
        """Frozen-encoder tokens of every image not yet encoded (computed once, reused)."""
        net.encoder.eval()
        todo = {}
        for x in samples:
            if x.image_key not in self.feats and x.image_key not in todo:
                todo[x.image_key] = x
        keys = list(todo)
        for i in range(0, len(keys), 64):
            chunk = keys[i:i + 64]
            imgs = torch.stack([_resized(todo[k], self.settings.input_px) for k in chunk])
            for k, f in zip(chunk, net.visual(imgs), strict=True):
                self.feats[k] = f.clone()

    # --- language-model stages -------------------------------------------------------------
    def _pair(self, x: Sample) -> tuple[list[int], list[int]]:
        key = (x.prompt, x.answer)
        if key not in self.pairs:
            cfg = self.config()
            self.pairs[key] = (self.tokens.prompt_rows(x.prompt, cfg.max_prompt_tokens),
                               self.tokens.answer_rows(x.answer, cfg.max_answer_tokens))
        return self.pairs[key]

    def fit(self, net: SkyMoENet, params: list[nn.Parameter], train: Sequence[Sample],
            steps: int, lr: float, batch: int, aux_alpha: float, rng: random.Random,
            label: str) -> dict:
        """AR loss on the answer tokens (+ aux_alpha * the MoE layers' L_aux), AdamW, cosine.

        Batches are task-balanced: each sample's task is drawn uniformly, then a sample of it
        (RSVQA has 30x more questions than NEON has grounding expressions)."""
        self.encode(net, train)
        pools: dict[str, list[Sample]] = {}
        for x in train:
            pools.setdefault(x.task, []).append(x)
        tasks = sorted(pools)
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        t0, losses, auxes = time.monotonic(), [], []
        net.train()
        net.encoder.eval()
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = _cosine(step, steps, lr)
            picked = [rng.choice(pools[rng.choice(tasks)]) for _ in range(batch)]
            vis = torch.stack([self.feats[x.image_key] for x in picked])
            rows, labels, valid = _collate([self._pair(x) for x in picked])
            logits = net(vis, rows, valid)
            ar = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                 ignore_index=-100)
            aux = net.aux_loss()
            loss = ar + aux_alpha * aux
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(float(ar.detach()))
            auxes.append(float(aux.detach()))
            if step % 100 == 0 or step == steps - 1:
                self.log(f"{label} step {step}/{steps} ar {losses[-1]:.3f} aux {auxes[-1]:.3f} "
                         f"({time.monotonic() - t0:.0f} s)")
        net.eval()
        tail, atail = losses[-50:] or [float("nan")], auxes[-50:] or [float("nan")]
        return {"steps": steps, "final_ar_loss": sum(tail) / len(tail),
                "final_aux_loss": sum(atail) / len(atail), "wall_s": time.monotonic() - t0,
                "trainable_params": sum(p.numel() for p in params)}

    def train_dense(self) -> tuple[SkyMoENet, dict]:
        """Encoder, stage 0 and stage I; returns the merged dense model and its provenance."""
        s = self.settings
        torch.manual_seed(s.seed)
        rng = random.Random(s.seed)
        net = SkyMoENet(self.config())
        net.set_prefix(self.tokens.prefix)
        stages = {"encoder": self.pretrain_encoder(net, rng)}
        train = self.train_split
        base_params = [p for n, p in net.named_parameters() if not n.startswith("encoder.")]
        stages["stage0"] = self.fit(net, base_params, train, s.base_steps, s.lr, s.batch, 0.0,
                                    rng, "stage0")
        for p in net.adaptor.parameters():
            p.requires_grad_(False)
        wrapped = add_lora(net, ("q_proj", "v_proj"), s.lora_r)
        stages["stage1"] = self.fit(net, lora_parameters(net), train, s.stage1_steps,
                                    s.lora_lr, s.batch, 0.0, rng, "stage1")
        stages["stage1"]["lora_targets"] = wrapped
        merge_lora(net)
        return net, {"stages": stages}

    def train_moe(self, dense: SkyMoENet, ms: MoESettings,
                  extra: Sequence[Sample] = ()) -> tuple[SkyMoENet, dict]:
        """Stage II from `dense`: upcycle (or widen), train the MoE layers on the training
        split plus `extra` (augmented training samples)."""
        torch.manual_seed(ms.seed)
        rng = random.Random(ms.seed + 1)
        if ms.num_experts:
            net = upcycle_net(dense, ms.num_experts, ms.top_k, seed=ms.seed)
            net.cfg = net.cfg.with_(name=moe_name(ms))
            params = [p for m in net.moe_layers() for p in m.parameters()]
        else:
            net = widen_net(dense, ms.widen)
            net.cfg = net.cfg.with_(name=moe_name(ms))
            params = [p for i, b in enumerate(net.blocks) if i % net.cfg.moe_every
                      == net.cfg.moe_every - 1 for p in b.ffn.parameters()]
        for p in net.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        train = self.train_split + list(extra)
        stage = self.fit(net, params, train, ms.steps, ms.lr, ms.batch, ms.aux_alpha, rng,
                         net.cfg.name)
        stage["train_samples"] = len(train)
        stage["augmented_samples"] = len(extra)
        return net, {"stages": {"stage2": stage}}


def _resized(x: Sample, px: int) -> torch.Tensor:
    img = load_sample_image(x).unsqueeze(0)
    return F.interpolate(img, size=(px, px), mode="bilinear", antialias=True,
                         align_corners=False)[0]


def _collate(pairs: Sequence[tuple[list[int], list[int]]]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(p) + len(a) for p, a in pairs)
    rows = torch.zeros(len(pairs), width, dtype=torch.long)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)
    valid = torch.zeros(len(pairs), width, dtype=torch.bool)
    for i, (p, a) in enumerate(pairs):
        seq = p + a
        rows[i, : len(seq)] = torch.tensor(seq)
        valid[i, : len(seq)] = True
        labels[i, len(p) - 1: len(seq) - 1] = torch.tensor(a)
    return rows, labels, valid


def _provenance(settings: dict, sha: str, samples: Sequence[Sample], split_seed: int,
                stages: dict, source: str) -> dict:
    train = select_split(samples, "train", split_seed)
    return {"settings": settings, "data_sha256": sha, "source": source,
            "split": {"rule": "sha256(seed:task/folder/file[@tile]) -> test 20 %, calib 10 %, "
                              "train 70 %", "seed": split_seed, "train_samples": len(train),
                      "train_images": len({s.image_key for s in train})},
            **stages, "threads": torch.get_num_threads(), "torch": torch.__version__}


def _data_sha256(samples: Sequence[Sample]) -> str:
    """The small VLMs' data digest plus the NEON annotation files the labels come from."""
    xmls = [s.image_path.with_suffix(".xml") for s in samples if s.task.startswith("neon")]
    return hashlib.sha256((data_sha256(samples) + _files_sha256(xmls)).encode()).hexdigest()


def _cached(prov_path: Path, want: dict, force: bool) -> bool:
    if force or not prov_path.is_file():
        return False
    old = json.loads(prov_path.read_text())
    return all(old.get(k) == v for k, v in want.items())


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=list))


def build(data: Path, out: Path, dense_settings: DenseSettings,
          moe_settings: Sequence[MoESettings], force: bool = False,
          log: Log = print, samples: list[Sample] | None = None) -> dict[str, Path]:
    """Train (or reuse) the dense model and each stage-II variant; returns name -> directory.

    `samples` replaces the source's full sample set (tests train on a few tasks)."""
    if samples is None:
        samples = sample_source.load(data, dense_settings.source, dense_settings.split_seed,
                                     dense_settings.eurosat_per_class)
    sha = _data_sha256(samples)
    trainer = Trainer.create(samples, dense_settings, log)
    dense_dir = out / "dense"
    want = {"data_sha256": sha, "settings": _jsonable(asdict(dense_settings))}
    built: dict[str, Path] = {"dense": dense_dir}
    if _cached(dense_dir / "provenance.json", want, force):
        log(f"dense: cached ({dense_dir})")
        dense = load_net(dense_dir)
        dense.set_prefix(trainer.tokens.prefix)
    else:
        dense, stages = trainer.train_dense()
        save_net(dense, dense_dir)
        prov = _provenance(want["settings"], sha, samples, dense_settings.split_seed, stages,
                           dense_settings.source)
        (dense_dir / "provenance.json").write_text(json.dumps(prov, indent=1))
        log(f"dense: trained ({sum(v['wall_s'] for v in stages['stages'].values()):.0f} s)")
    dense_prov = json.loads((dense_dir / "provenance.json").read_text())
    for ms in moe_settings:
        name = moe_name(ms)
        target = out / name
        built[name] = target
        extra: list[Sample] = []
        aug_sha = None
        if ms.augment:
            extra = _augment(trainer.train_split, out / "augmented", ms)
            aug_sha = _files_sha256([x.image_path for x in extra])
        want_moe = {"data_sha256": sha, "settings": _jsonable(asdict(ms)),
                    "augmented_sha256": aug_sha,
                    "parent_sha256": hashlib.sha256((dense_dir / "weights.pt").read_bytes())
                    .hexdigest()}
        if _cached(target / "provenance.json", want_moe, force):
            log(f"{name}: cached ({target})")
            continue
        net, stages = trainer.train_moe(dense, ms, extra)
        save_net(net, target)
        prov = _provenance(want_moe["settings"], sha, samples, dense_settings.split_seed,
                           stages, dense_settings.source)
        prov.update(augmented_sha256=aug_sha, parent_sha256=want_moe["parent_sha256"],
                    parent=dense_prov)
        (target / "provenance.json").write_text(json.dumps(prov, indent=1))
        log(f"{name}: trained ({stages['stages']['stage2']['wall_s']:.0f} s)")
    return built


def _augment(train: Sequence[Sample], out_dir: Path, ms: MoESettings) -> list[Sample]:
    """Context-disentangled augmentation of the training split (`nodes.skymoe.augment`)."""
    try:
        from nodes.skymoe.augment import augment_to_cache
    except ModuleNotFoundError as exc:
        raise ModelConfigError(f"stage II: augment={list(ms.augment)} needs "
                               f"nodes.skymoe.augment ({exc})") from None
    return list(augment_to_cache(list(train), out_dir, ms.seed, tuple(ms.augment)))


def main(argv: list[str] | None = None) -> int:
    """Train or reuse the dense model and the requested stage-II variants."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the data folder's images/")
    ap.add_argument("--out", type=Path, default=Path(".cache/models/skymoe"))
    ap.add_argument("--source", choices=sample_source.SOURCES,
                    default=sample_source.default_source())
    ap.add_argument("--encoder-steps", type=int, default=DenseSettings.encoder_steps)
    ap.add_argument("--base-steps", type=int, default=DenseSettings.base_steps)
    ap.add_argument("--stage1-steps", type=int, default=DenseSettings.stage1_steps)
    ap.add_argument("--lora-r", type=int, default=DenseSettings.lora_r)
    ap.add_argument("--experts", type=int, nargs="+", default=[4],
                    help="stage-II variants by expert count (0 = none)")
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--aux-alpha", type=float, default=0.01)
    ap.add_argument("--stage2-steps", type=int, default=MoESettings.steps)
    ap.add_argument("--augment", nargs="*", default=[])
    ap.add_argument("--force", action="store_true", help="retrain even if the cache matches")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    dense = DenseSettings(source=args.source, encoder_steps=args.encoder_steps,
                          base_steps=args.base_steps, stage1_steps=args.stage1_steps,
                          lora_r=args.lora_r)
    variants = [MoESettings(num_experts=e, top_k=args.top_k, aux_alpha=args.aux_alpha,
                            steps=args.stage2_steps, augment=tuple(args.augment))
                for e in args.experts if e > 0]
    built = build(args.data, args.out, dense, variants, args.force,
                  log=lambda m: print(m, file=sys.stderr))
    for name, path in built.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
