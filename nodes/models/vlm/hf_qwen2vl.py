"""Qwen2-VL (Hugging Face transformers) behind the VLM interface, loaded from a local directory.

Owns the adapter only: the lab's Qwen2-VL-2B/7B-Instruct checkpoints and the tiny offline-built
model (`tiny_qwen2vl`) load through the same `from_local_dir` (`local_files_only=True`; nothing
is downloaded).

- V(x): the vision tower's merged visual tokens (`get_image_features`), in the LLM's input space.
- E(T): the LLM's input embeddings of the prompt's tokens (same space).
- Step-wise generation: each `step` continues greedy decoding for N more tokens from the prompt
  plus what was generated (the prefix is recomputed; no KV cache is kept between steps), and
  records each token's softmax probability.
- Token features A: input embeddings of the generated tokens.
- Work: 2 FLOPs per parameter per token (ViT over the patches, LLM over the sequence; the LM
  head over one position per generated token); FP16 weights read once per pass.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nodes.compute import ModelWork
from nodes.models.errors import ModelNotFoundError
from nodes.models.vlm.base import Generation, VisionLanguageModel

__all__ = ["HFQwen2VL"]

_TEMPLATE = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
             "<|vision_start|><|image_pad|><|vision_end|>{prompt}<|im_end|>\n"
             "<|im_start|>assistant\n")


def _pil(image: torch.Tensor):
    from PIL import Image

    arr = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    return Image.fromarray(arr.numpy(), "RGB")


class HFQwen2VL(VisionLanguageModel):
    """A Qwen2-VL model and its processor."""

    def __init__(self, model, processor, name: str):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.name = name
        self.eos_ids = {self.tokenizer.convert_tokens_to_ids(t)
                        for t in ("<|im_end|>", "<|endoftext|>")}

    @classmethod
    def from_local_dir(cls, local_dir: Path, name: str | None = None,
                       dtype: torch.dtype = torch.float32) -> HFQwen2VL:
        """Load model and processor from `local_dir` only (a Hugging Face save directory)."""
        from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

        local_dir = Path(local_dir)
        if not (local_dir / "config.json").is_file():
            raise ModelNotFoundError(f"Qwen2-VL {local_dir}: no config.json, expected a "
                                     "Hugging Face model directory")
        processor = AutoProcessor.from_pretrained(local_dir, local_files_only=True)
        model = Qwen2VLForConditionalGeneration.from_pretrained(local_dir, local_files_only=True,
                                                                dtype=dtype)
        return cls(model, processor, name or local_dir.name)

    def _inputs(self, images: list, text: list[str]) -> dict:
        return dict(self.processor(text=text, images=images, return_tensors="pt"))

    @torch.no_grad()
    def _visual(self, images: list) -> list[torch.Tensor]:
        px = self.processor.image_processor(images=images, return_tensors="pt")
        out = self.model.get_image_features(px["pixel_values"], px["image_grid_thw"])
        return list(out.pooler_output)

    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        return self._visual([_pil(image)])[0].float()

    def region_features(self, regions: torch.Tensor) -> torch.Tensor:
        return torch.stack(self._visual([_pil(r) for r in regions])).float()

    @torch.no_grad()
    def text_features(self, prompt: str) -> torch.Tensor:
        ids = torch.tensor(self.tokenizer(prompt)["input_ids"])
        return self.model.get_input_embeddings()(ids).float()

    def start(self, image: torch.Tensor, prompt: str) -> Generation:
        inputs = self._inputs([_pil(image)], [_TEMPLATE.format(prompt=prompt)])
        return Generation(prompt=prompt, state={"inputs": inputs})

    @torch.no_grad()
    def step(self, gen: Generation, n_tokens: int) -> Generation:
        if gen.done or n_tokens <= 0:
            return gen
        inputs = dict(gen.state["inputs"])
        if gen.token_ids:
            extra = torch.tensor([gen.token_ids])
            inputs["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
            inputs["attention_mask"] = torch.cat([inputs["attention_mask"],
                                                  torch.ones_like(extra)], dim=1)
            if "mm_token_type_ids" in inputs:
                inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"],
                                                         torch.zeros_like(extra)], dim=1)
        start = inputs["input_ids"].shape[1]
        out = self.model.generate(**inputs, max_new_tokens=n_tokens, do_sample=False,
                                  output_logits=True, return_dict_in_generate=True,
                                  pad_token_id=self.tokenizer.pad_token_id)
        for tok, logits in zip(out.sequences[0, start:].tolist(), out.logits, strict=False):
            gen.token_ids.append(tok)
            gen.token_probs.append(float(logits[0].float().softmax(-1)[tok]))
            if tok in self.eos_ids:
                gen.done = True
                break
        return gen

    @torch.no_grad()
    def token_features(self, gen: Generation) -> torch.Tensor:
        emb = self.model.get_input_embeddings()
        if not gen.token_ids:
            return torch.zeros(0, emb.embedding_dim)
        return emb(torch.tensor(gen.token_ids)).float()

    def decode(self, gen: Generation) -> str:
        return self.tokenizer.decode(gen.token_ids, skip_special_tokens=True).strip()

    def work(self, image: torch.Tensor, prompt: str) -> ModelWork:
        inputs = self._inputs([_pil(image)], [_TEMPLATE.format(prompt=prompt)])
        patches = int(inputs["image_grid_thw"].prod(-1).sum())
        seq = int(inputs["input_ids"].shape[1])
        vit = sum(p.numel() for p in self.model.model.visual.parameters())
        emb = self.model.get_input_embeddings().weight.numel()
        llm = sum(p.numel() for p in self.model.model.language_model.parameters()) - emb
        head = self.model.get_output_embeddings().weight.numel()
        total = sum(p.numel() for p in self.model.parameters())
        return ModelWork(self.name, total, 2.0 * vit * patches + 2.0 * llm * seq + 2.0 * head,
                         2.0 * (vit + llm + head), 2.0 * (llm + head), 2.0 * (llm + head))
