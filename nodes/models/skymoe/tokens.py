"""Qwen2's real tokenizer over a reduced embedding table, and SkyMoE's one conversational format.

Owns the id mapping: text is tokenized by Qwen2's tokenizer (exact Qwen2 ids); the model's
embedding and output tables hold only the Qwen2 ids that occur in the training corpus (prompts,
answers, the template), row i + 1 for `vocab[i]`, row 0 for any other id (unknown). Generated
tokens map back to Qwen2 ids, so a `Generation` carries Qwen2's ids. A 151,936-row table would
be 19 M parameters at width 128, 30x the rest of the model, for ids never seen in training.

Format (one turn, Qwen2-VL's chat markers; the R visual tokens sit between the vision markers):

    <|im_start|>user\n<|vision_start|>[R visual tokens]<|vision_end|>{prompt}<|im_end|>\n
    <|im_start|>assistant\n{answer}<|im_end|>
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

__all__ = ["ANSWER_END", "PREFIX", "SUFFIX", "TokenMap", "build_vocab"]

PREFIX = "<|im_start|>user\n<|vision_start|>"
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
ANSWER_END = "<|im_end|>"
UNK = 0


def build_vocab(tokenizer, texts: Iterable[str]) -> list[int]:
    """The sorted Qwen2 ids of `texts` plus the template's and `<|endoftext|>`."""
    ids: set[int] = set()
    for t in (*texts, PREFIX, "<|vision_end|>" + SUFFIX, ANSWER_END, "<|endoftext|>"):
        ids.update(tokenizer(t)["input_ids"])
    return sorted(ids)


class TokenMap:
    """Qwen2 ids <-> rows of the reduced table, and the template's pieces as rows."""

    def __init__(self, tokenizer, vocab: Sequence[int]):
        self.tokenizer = tokenizer
        self.vocab = list(vocab)
        self._row = {q: i + 1 for i, q in enumerate(self.vocab)}
        self.prefix = self.rows(tokenizer(PREFIX)["input_ids"])
        self.end = self._row[tokenizer.convert_tokens_to_ids(ANSWER_END)]

    @property
    def size(self) -> int:
        """Rows of the embedding/output table (the unknown row included)."""
        return len(self.vocab) + 1

    def rows(self, qwen_ids: Sequence[int]) -> list[int]:
        """Qwen2 ids -> table rows (unknown ids -> row 0)."""
        return [self._row.get(q, UNK) for q in qwen_ids]

    def qwen_ids(self, rows: Sequence[int]) -> list[int]:
        """Table rows -> Qwen2 ids (row 0 -> `<|endoftext|>`)."""
        eot = self.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        return [self.vocab[r - 1] if r > 0 else eot for r in rows]

    def prompt_rows(self, prompt: str, max_tokens: int) -> list[int]:
        """Rows after the visual tokens: `<|vision_end|>`, the prompt (cut to `max_tokens`
        tokens), the end of the user turn and the assistant header."""
        tok = self.tokenizer
        body = tok(prompt)["input_ids"][:max_tokens]
        return self.rows(tok("<|vision_end|>")["input_ids"] + body + tok(SUFFIX)["input_ids"])

    def answer_rows(self, answer: str, max_tokens: int) -> list[int]:
        """The answer's rows (cut to `max_tokens - 1`) and the `<|im_end|>` row."""
        return self.rows(self.tokenizer(answer)["input_ids"][: max_tokens - 1]) + [self.end]

    def batch(self, prompts: Sequence[str], answers: Sequence[str], max_prompt: int,
              max_answer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Text after the visual tokens, right-padded: (rows `[B, T]`, labels `[B, T]` with
        -100 except where the next token is an answer token, valid mask `[B, T]`)."""
        seqs, starts = [], []
        for p, a in zip(prompts, answers, strict=True):
            pr = self.prompt_rows(p, max_prompt)
            starts.append(len(pr))
            seqs.append(pr + self.answer_rows(a, max_answer))
        width = max(len(s) for s in seqs)
        rows = torch.zeros(len(seqs), width, dtype=torch.long)
        labels = torch.full((len(seqs), width), -100, dtype=torch.long)
        valid = torch.zeros(len(seqs), width, dtype=torch.bool)
        for i, (s, st) in enumerate(zip(seqs, starts, strict=True)):
            rows[i, : len(s)] = torch.tensor(s)
            valid[i, : len(s)] = True
            # position t predicts token t + 1: the last prompt position predicts the first
            # answer token, ..., the last answer token predicts <|im_end|>
            labels[i, st - 1: len(s) - 1] = torch.tensor(s[st:])
        return rows, labels, valid
