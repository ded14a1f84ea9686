"""SkyMoE behind the VLM interface (usable as SpaceVerse's ground model W^g), with routing stats.

Owns inference: loading a trained model directory (`config.json`, `weights.pt`), KV-cached
step-wise greedy generation over the reduced vocabulary (token ids reported as Qwen2's ids,
probabilities from the softmax over the reduced table), features V/E/A, the model's work for
the compute-time model, and the routing statistics live metrics read (tokens per expert per
MoE layer, routing entropy).

    vlm = SkyMoEVLM.load(model_dir)
    gen = vlm.generate(image, "Which scene does this image belong to?")
    vlm.decode(gen), gen.token_probs, vlm.routing_stats()
"""

from __future__ import annotations

from pathlib import Path

import torch

from nodes.compute import ModelWork
from nodes.models.errors import ModelConfigError, ModelNotFoundError
from nodes.models.skymoe.config import read_config
from nodes.models.skymoe.moe import RoutingStats
from nodes.models.skymoe.net import SkyMoENet
from nodes.models.skymoe.tokens import TokenMap
from nodes.models.vlm.base import Generation, VisionLanguageModel

__all__ = ["SkyMoEVLM", "load_net", "save_net"]


def save_net(net: SkyMoENet, model_dir: Path) -> None:
    """Write `config.json` and `weights.pt` (LoRA must be merged first)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(net.cfg.to_json())
    torch.save(net.state_dict(), model_dir / "weights.pt")


def load_net(model_dir: Path) -> SkyMoENet:
    """A `SkyMoENet` from `model_dir`; names the missing file or the mismatching tensors."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelNotFoundError(f"SkyMoE model {model_dir}: not a directory; build it with "
                                 "`make models-skymoe`")
    w_path = model_dir / "weights.pt"
    cfg = read_config(model_dir / "config.json")
    if not w_path.is_file():
        raise ModelNotFoundError(f"SkyMoE model {model_dir}: weights.pt missing; build it "
                                 "with `make models-skymoe`")
    net = SkyMoENet(cfg)
    state = torch.load(w_path, map_location="cpu", weights_only=True)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelConfigError(f"SkyMoE model {model_dir}: weights.pt does not match "
                               f"config.json ({str(exc).splitlines()[0]} ...)") from None
    return net.eval()


class SkyMoEVLM(VisionLanguageModel):
    """A trained `SkyMoENet` (eval mode) with Qwen2's tokenizer over its reduced vocabulary."""

    def __init__(self, net: SkyMoENet, tokenizer=None):
        from nodes.models.vlm.qwen_tokenizer import build_qwen2_tokenizer

        self.net = net.eval()
        self.cfg = net.cfg
        self.name = net.cfg.name
        self.tokens = TokenMap(tokenizer or build_qwen2_tokenizer(), net.cfg.vocab)
        self.net.set_prefix(self.tokens.prefix)
        self._work: dict[tuple[int, int, str], ModelWork] = {}

    @classmethod
    def load(cls, model_dir: Path, tokenizer=None) -> SkyMoEVLM:
        """Load `config.json` and `weights.pt` from `model_dir`."""
        return cls(load_net(model_dir), tokenizer)

    def save(self, model_dir: Path) -> None:
        save_net(self.net, model_dir)

    # --- features --------------------------------------------------------------------------
    @torch.no_grad()
    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        """V(x): the adaptor's visual tokens `[R, D]` (the LLM's input space)."""
        return self.net.adaptor(self.net.visual(image.unsqueeze(0)))[0]

    @torch.no_grad()
    def region_features(self, regions: torch.Tensor) -> torch.Tensor:
        # a crop is encoded at half the input size per side (a quarter of the tokens)
        px = max(32, self.cfg.input_px // 2 // 16 * 16)
        return self.net.adaptor(self.net.visual(regions, px))

    @torch.no_grad()
    def text_features(self, prompt: str) -> torch.Tensor:
        """E(T): input embeddings `[T, D]` of the prompt's tokens."""
        ids = self.tokens.tokenizer(prompt)["input_ids"][: self.cfg.max_prompt_tokens]
        return self.net.embed(torch.tensor(self.tokens.rows(ids) or [0]))

    # --- generation ------------------------------------------------------------------------
    @torch.no_grad()
    def start(self, image: torch.Tensor, prompt: str) -> Generation:
        rows = torch.tensor([self.tokens.prompt_rows(prompt, self.cfg.max_prompt_tokens)])
        h, cache = self.net.prefill(self.net.visual(image.unsqueeze(0)), rows)
        pos = len(self.tokens.prefix) + self.cfg.grid ** 2 + rows.shape[1]
        return Generation(prompt=prompt, state={"h": h, "cache": cache, "pos": pos,
                                                "feats": []})

    @torch.no_grad()
    def step(self, gen: Generation, n_tokens: int) -> Generation:
        st = gen.state
        for _ in range(n_tokens):
            if gen.done or gen.num_tokens >= self.cfg.max_answer_tokens:
                gen.done = True
                break
            logits = self.net.head(st["h"])[0]
            logits[0] = float("-inf")  # never emit the unknown row
            probs = logits.softmax(-1)
            row = int(probs.argmax())
            gen.token_ids.append(self.tokens.qwen_ids([row])[0])
            gen.token_probs.append(float(probs[row]))
            st["feats"].append(st["h"][0].clone())
            gen.done = row == self.tokens.end
            if not gen.done:
                st["h"] = self.net.decode_one(row, st["pos"], st["cache"])
                st["pos"] += 1
        return gen

    def token_features(self, gen: Generation) -> torch.Tensor:
        """The final hidden state that emitted each generated token, `[n, D]`."""
        feats = gen.state["feats"] if gen.state else []
        return torch.stack(feats) if feats else torch.zeros(0, self.cfg.dim)

    def decode(self, gen: Generation) -> str:
        return self.tokens.tokenizer.decode(gen.token_ids, skip_special_tokens=True).strip()

    # --- routing statistics -----------------------------------------------------------------
    def track_routing(self, on: bool = True) -> None:
        """Start (fresh counters) or stop recording routing in every MoE layer."""
        for m in self.net.moe_layers():
            m.stats = RoutingStats(m.num_experts) if on else None

    def routing_stats(self) -> list[dict]:
        """Per MoE layer since `track_routing()`: layer index, tokens, tokens per expert (top-k
        assignments), shares, mean routing entropy (nats) and load balance (0..1)."""
        out = []
        for i, block in enumerate(self.net.blocks):
            stats = getattr(block.ffn, "stats", None)
            if stats is not None:
                out.append({"layer": i, **stats.as_dict()})
        return out

    # --- work ------------------------------------------------------------------------------
    def active_params(self) -> int:
        """Parameters one token uses: all but the (E - k) unselected experts per MoE layer."""
        total = sum(p.numel() for p in self.net.parameters())
        for m in self.net.moe_layers():
            per_expert = sum(p.numel() for p in m.experts[0].parameters())
            total -= (m.num_experts - m.top_k) * per_expert
        return total

    def work(self, image: torch.Tensor, prompt: str) -> ModelWork:
        """FLOPs counted by torch's counter on one prefill and one generated token (the MoE's
        real dispatch, so k experts per MoE layer); bytes: FP16 weights read once per pass,
        the active parameters only for a token (encoder and adaptor excluded)."""
        from torch.utils.flop_counter import FlopCounterMode

        key = (image.shape[-2], image.shape[-1], prompt)
        if key not in self._work:
            with torch.no_grad(), FlopCounterMode(display=False) as fc:
                gen = self.start(image, prompt)
            prefill = fc.get_total_flops()
            gen.state["h"] = gen.state["h"].clone()
            with torch.no_grad(), FlopCounterMode(display=False) as fc:
                self.net.head(gen.state["h"])
                self.net.decode_one(1, gen.state["pos"], gen.state["cache"])
            token = fc.get_total_flops()
            vision = sum(p.numel() for m in (self.net.encoder, self.net.adaptor)
                         for p in m.parameters())
            active = self.active_params()
            self._work[key] = ModelWork(self.name, sum(p.numel() for p in self.net.parameters()),
                                        float(prefill), 2.0 * active + 2.0 * image.numel(),
                                        float(token), 2.0 * (active - vision))
        return self._work[key]


