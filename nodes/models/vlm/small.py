"""The small VLMs the project trains itself: a compact on-board W^s and a larger ground W^g.

Owns the architecture, its step-wise greedy decoder and saving/loading a trained model with its
config. A CNN image encoder gives a grid of visual tokens, a one-layer transformer encodes the
prompt's words, the prompt attends to the visual tokens (one cross-attention), and a GRU decoder
writes the answer word by word over a closed answer vocabulary, with each word's probability.

V(x) and E(T) are exposed in the cross-attention's key and query spaces (visual tokens through
W_k, prompt tokens through W_q), so cos(V_i, E_j) measures what the attention itself compares.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nodes.models.errors import ModelConfigError, ModelNotFoundError
from nodes.models.vlm.base import Generation, ModelWork, VisionLanguageModel
from nodes.models.vlm.data import Sample, tokenize_words

__all__ = ["SmallVLM", "SmallVLMConfig", "SmallVLMNet", "load_image", "load_sample_image",
           "preset", "save_net"]

PAD, UNK = 0, 1          # prompt vocabulary
BOS, EOS = 0, 1          # answer vocabulary
_MEAN, _STD = 0.45, 0.25
GROUND_PX = 128


@dataclass
class SmallVLMConfig:
    """Architecture and vocabularies; saved as `config.json` beside the weights."""

    name: str
    input_px: int
    widths: tuple[int, ...]
    dim: int
    heads: int = 4
    max_prompt_tokens: int = 24
    max_answer_tokens: int = 6
    prompt_vocab: list[str] = field(default_factory=list)
    answer_vocab: list[str] = field(default_factory=list)
    # residual 3x3 blocks after each stage's strided conv (depth where the grid is small)
    blocks: tuple[int, ...] = (0, 0, 0, 0)

    def __post_init__(self) -> None:
        self.widths = tuple(self.widths)
        self.blocks = tuple(self.blocks)
        if len(self.blocks) != 4 or min(self.blocks) < 0:
            raise ModelConfigError(f"model {self.name}: blocks={self.blocks}, expected 4 "
                                   "counts >= 0")
        if self.input_px % 16 or self.input_px < 32:
            raise ModelConfigError(f"model {self.name}: input_px={self.input_px}, "
                                   "expected a multiple of 16, >= 32")
        if len(self.widths) != 4 or self.dim % self.heads:
            raise ModelConfigError(f"model {self.name}: widths={self.widths} dim={self.dim} "
                                   f"heads={self.heads}, expected 4 widths and dim % heads == 0")


def preset(kind: str, prompt_vocab: list[str], answer_vocab: list[str]) -> SmallVLMConfig:
    """`onboard` (W^s: 64 px, 4 convs, narrow) or `ground` (W^g: GROUND_PX, deeper and wider).

    The ground model is the "regular VLM" of the pair: twice the input resolution of the
    on-board one and residual blocks where the grid is small, so it keeps the detail of the
    512 px RSVQA-HR and 256 px UC Merced images that 64 px loses.
    """
    if kind == "onboard":
        return SmallVLMConfig("small-onboard", 64, (16, 24, 32, 48), 48, 4, 24, 6,
                              prompt_vocab, answer_vocab)
    if kind == "ground":
        return SmallVLMConfig("small-ground", GROUND_PX, (24, 48, 96, 160), 160, 4, 24, 6,
                              prompt_vocab, answer_vocab, blocks=(0, 0, 1, 1))
    raise ModelConfigError(f"unknown small VLM preset {kind!r}; choose: ground, onboard")


def load_image(path: Path) -> torch.Tensor:
    """An image file as a float tensor `[3, H, W]` in [0, 1]."""
    from PIL import Image  # pillow comes with torchvision

    with Image.open(path) as im:
        rgb = im.convert("RGB")
        data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
        return data.view(rgb.height, rgb.width, 3).permute(2, 0, 1).float() / 255.0


def load_sample_image(sample: Sample) -> torch.Tensor:
    """A sample's image `[3, H, W]` in [0, 1], cut to its tile when it has one."""
    img = load_image(sample.image_path)
    if sample.crop is None:
        return img
    x0, y0, x1, y1 = sample.crop
    return img[:, y0:y1, x0:x1].contiguous()


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    """x + conv-bn-relu-conv-bn(x), then relu: depth without changing the grid."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                                  nn.Conv2d(width, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class SmallVLMNet(nn.Module):
    """The network; `SmallVLM` wraps it into the VLM interface."""

    def __init__(self, cfg: SmallVLMConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        layers, cin = [], 3
        for w, n_blocks in zip(cfg.widths, cfg.blocks, strict=True):
            layers.append(_conv(cin, w))
            layers.extend(_Residual(w) for _ in range(n_blocks))
            cin = w
        self.cnn = nn.Sequential(*layers)
        self.vis_proj = nn.Conv2d(cin, d, 1)
        self.vis_pos = nn.Parameter(torch.zeros(1, d, 1, 1))
        self.txt_emb = nn.Embedding(len(cfg.prompt_vocab) + 2, d, padding_idx=PAD)
        self.txt_pos = nn.Parameter(torch.randn(cfg.max_prompt_tokens, d) * 0.02)
        self.txt_enc = nn.TransformerEncoderLayer(d, cfg.heads, 2 * d, dropout=0.0,
                                                  batch_first=True)
        self.cross = nn.MultiheadAttention(d, cfg.heads, batch_first=True)
        self.ans_emb = nn.Embedding(len(cfg.answer_vocab) + 2, d)
        self.gru = nn.GRUCell(2 * d, d)
        self.init_h = nn.Linear(2 * d, d)
        self.out = nn.Linear(d, len(cfg.answer_vocab) + 2)

    def prep(self, images: torch.Tensor) -> torch.Tensor:
        """Resize `[B, 3, H, W]` in [0, 1] to the input size and normalise."""
        px = self.cfg.input_px
        if images.shape[-2:] != (px, px):
            images = F.interpolate(images, size=(px, px), mode="bilinear", antialias=True,
                                   align_corners=False)
        return (images - _MEAN) / _STD

    def visual_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """`[B, 3, H, W]` -> `[B, R, D]` visual tokens (R = (input_px / 16) ** 2)."""
        fmap = self.vis_proj(self.cnn(self.prep(images))) + self.vis_pos
        return fmap.flatten(2).transpose(1, 2)

    def prompt_ids(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Word ids `[B, T]` and a padding mask (True = padding)."""
        index = {w: i + 2 for i, w in enumerate(self.cfg.prompt_vocab)}
        rows = [[index.get(w, UNK) for w in tokenize_words(p)][: self.cfg.max_prompt_tokens]
                or [UNK] for p in prompts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        return ids, ids == PAD

    def text_tokens(self, ids: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """`[B, T]` -> `[B, T, D]` contextual prompt tokens."""
        x = self.txt_emb(ids) + self.txt_pos[: ids.shape[1]]
        return self.txt_enc(x, src_key_padding_mask=pad)

    def context(self, vis: torch.Tensor, txt: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """Fused `[B, 2D]`: prompt attends to the visual tokens, both pooled."""
        att, _ = self.cross(txt, vis, vis, need_weights=False)
        keep = (~pad).unsqueeze(-1).float()
        pooled = (att * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        txt_pooled = (txt * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return torch.cat([pooled, txt_pooled], dim=-1)

    def decode_step(self, prev: torch.Tensor, h: torch.Tensor,
                    ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder step: previous answer ids `[B]` -> (logits `[B, V]`, new hidden `[B, D]`)."""
        d = self.cfg.dim
        h = self.gru(torch.cat([self.ans_emb(prev), ctx[:, :d]], dim=-1), h)
        return self.out(h), h

    def forward(self, images: torch.Tensor, prompts: list[str],
                answer_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits `[B, L, V]` for answer inputs `[B, L]` (BOS first)."""
        ids, pad = self.prompt_ids(prompts)
        ctx = self.context(self.visual_tokens(images), self.text_tokens(ids, pad), pad)
        h = torch.tanh(self.init_h(ctx))
        logits = []
        for t in range(answer_in.shape[1]):
            step_logits, h = self.decode_step(answer_in[:, t], h, ctx)
            logits.append(step_logits)
        return torch.stack(logits, dim=1)

    def answer_ids(self, answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder inputs (BOS + words) and targets (words + EOS), padded with -100 targets."""
        index = {w: i + 2 for i, w in enumerate(self.cfg.answer_vocab)}
        rows = [[index[w] for w in tokenize_words(a)][: self.cfg.max_answer_tokens - 1]
                for a in answers]
        width = max(len(r) for r in rows) + 1
        inp = torch.full((len(rows), width), EOS, dtype=torch.long)
        tgt = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            inp[i, : len(r) + 1] = torch.tensor([BOS, *r])
            tgt[i, : len(r) + 1] = torch.tensor([*r, EOS])
        return inp, tgt


class SmallVLM(VisionLanguageModel):
    """A trained `SmallVLMNet` behind the VLM interface (inference only, eval mode)."""

    def __init__(self, net: SmallVLMNet):
        self.net = net.eval()
        self.cfg = net.cfg
        self.name = net.cfg.name
        self._work: dict[tuple[int, int, int], ModelWork] = {}

    @classmethod
    def load(cls, model_dir: Path) -> SmallVLM:
        """Load `config.json` and `weights.pt` from `model_dir`."""
        model_dir = Path(model_dir)
        cfg_path, w_path = model_dir / "config.json", model_dir / "weights.pt"
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise ModelNotFoundError(f"small VLM {model_dir}: {p.name} missing; "
                                         "build it with `make models-vlm`")
        cfg = SmallVLMConfig(**json.loads(cfg_path.read_text()))
        net = SmallVLMNet(cfg)
        net.load_state_dict(torch.load(w_path, map_location="cpu", weights_only=True))
        return cls(net)

    def save(self, model_dir: Path) -> None:
        """Write `config.json` and `weights.pt` into `model_dir`."""
        save_net(self.net, model_dir)

    @torch.no_grad()
    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        vis = self.net.visual_tokens(image.unsqueeze(0))[0]
        return F.linear(vis, *self._proj(1))

    @torch.no_grad()
    def region_features(self, regions: torch.Tensor) -> torch.Tensor:
        # regions keep their own scale: a crop is encoded at 1/4 of the input size per side
        small = max(16, self.cfg.input_px // 4 // 16 * 16)
        crops = F.interpolate(regions, size=(small, small), mode="bilinear", antialias=True,
                              align_corners=False)
        fmap = self.net.vis_proj(self.net.cnn((crops - _MEAN) / _STD)) + self.net.vis_pos
        return F.linear(fmap.flatten(2).transpose(1, 2), *self._proj(1))

    @torch.no_grad()
    def text_features(self, prompt: str) -> torch.Tensor:
        ids, pad = self.net.prompt_ids([prompt])
        return F.linear(self.net.text_tokens(ids, pad)[0], *self._proj(0))

    def _proj(self, which: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention in-projection: 0 = W_q (prompt), 1 = W_k (visual)."""
        d = self.cfg.dim
        w, b = self.net.cross.in_proj_weight, self.net.cross.in_proj_bias
        return w[which * d:(which + 1) * d], b[which * d:(which + 1) * d]

    @torch.no_grad()
    def start(self, image: torch.Tensor, prompt: str) -> Generation:
        ids, pad = self.net.prompt_ids([prompt])
        ctx = self.net.context(self.net.visual_tokens(image.unsqueeze(0)),
                               self.net.text_tokens(ids, pad), pad)
        h = torch.tanh(self.net.init_h(ctx))
        state = {"ctx": ctx, "h": h, "prev": torch.tensor([BOS]), "feats": []}
        return Generation(prompt=prompt, state=state)

    @torch.no_grad()
    def step(self, gen: Generation, n_tokens: int) -> Generation:
        st = gen.state
        for _ in range(n_tokens):
            if gen.done or gen.num_tokens >= self.cfg.max_answer_tokens:
                gen.done = True
                break
            logits, st["h"] = self.net.decode_step(st["prev"], st["h"], st["ctx"])
            logits[:, BOS] = float("-inf")
            probs = logits.softmax(-1)[0]
            tok = int(probs.argmax())
            gen.token_ids.append(tok)
            gen.token_probs.append(float(probs[tok]))
            st["feats"].append(st["h"][0].clone())
            st["prev"] = torch.tensor([tok])
            gen.done = tok == EOS
        return gen

    def token_features(self, gen: Generation) -> torch.Tensor:
        feats = gen.state["feats"] if gen.state else []
        if not feats:
            return torch.zeros(0, self.cfg.dim)
        return torch.stack(feats)

    def decode(self, gen: Generation) -> str:
        words = [self.cfg.answer_vocab[t - 2] for t in gen.token_ids if t >= 2]
        return " ".join(words)

    def work(self, image: torch.Tensor, prompt: str) -> ModelWork:
        """Counted by torch's FLOP counter on one prefill and one decoder step (cached)."""
        from torch.utils.flop_counter import FlopCounterMode

        n_words = len(tokenize_words(prompt))
        key = (image.shape[-2], image.shape[-1], n_words)
        if key not in self._work:
            with torch.no_grad(), FlopCounterMode(display=False) as fc:
                gen = self.start(image, prompt)
            prefill = fc.get_total_flops()
            with torch.no_grad(), FlopCounterMode(display=False) as fc:
                self.step(gen, 1)
            token = fc.get_total_flops()
            n = self.net
            dec_params = sum(p.numel() for m in (n.gru, n.out, n.ans_emb) for p in m.parameters())
            params = sum(p.numel() for p in n.parameters())
            # bytes: FP16 weights read once per pass (+ the FP16 input image for the prefill)
            self._work[key] = ModelWork(self.name, params, float(prefill),
                                        2.0 * params + 2.0 * image.numel(),
                                        float(token), 2.0 * dec_params)
        return self._work[key]


def save_net(net: SmallVLMNet, model_dir: Path) -> None:
    """Write `config.json` and `weights.pt` for `net` into `model_dir`."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    cfg = asdict(net.cfg)
    cfg["widths"] = list(cfg["widths"])
    cfg["blocks"] = list(cfg["blocks"])
    (model_dir / "config.json").write_text(json.dumps(cfg, indent=1))
    torch.save(net.state_dict(), model_dir / "weights.pt")
