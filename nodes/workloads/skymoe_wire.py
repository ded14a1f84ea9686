"""What a satellite sends `skymoe-serve` over the data plane, and what it gets back.

Standard library only, so a satellite's workload (e.g. an offload to the ground model) builds
questions without torch. A question goes to the ground on topic `QUESTION_TOPIC`; the answer
comes back to its sender on `ANSWER_TOPIC`.

Question payload: u32 big-endian header length, the UTF-8 JSON header, the image file's bytes
(PNG or JPEG). Header: `id` (the asker's name for it), `prompt`; optionally `task`, `qtype` and
`reference` (then the ground scores the answer with `nodes.skymoe.tasks.score`).
Answer payload: UTF-8 JSON `{id, answer, tokens, correct, measured_prefill_s, measured_token_s,
emulated_prefill_s, emulated_token_s, queue_wait_s, held_s, model, error}` (`correct` null when
no reference came; `error` non-empty when the question could not be answered).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from nodes.errors import WorkloadError

__all__ = ["ANSWER_TOPIC", "QUESTION_TOPIC", "Question", "decode_answer", "decode_question",
           "encode_answer", "encode_question"]

QUESTION_TOPIC = "skymoe/ask"
ANSWER_TOPIC = "skymoe/answer"
_LEN = struct.Struct(">I")
_MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Question:
    """One question as the ground reads it."""

    id: str
    prompt: str
    image: bytes
    task: str | None = None
    qtype: str | None = None
    reference: str | None = None


def encode_question(q: Question) -> bytes:
    header = {"id": q.id, "prompt": q.prompt}
    header.update({k: v for k, v in (("task", q.task), ("qtype", q.qtype),
                                     ("reference", q.reference)) if v is not None})
    raw = json.dumps(header).encode()
    return _LEN.pack(len(raw)) + raw + q.image


def decode_question(payload: bytes) -> Question:
    """The question in `payload`; WorkloadError naming what is wrong with it."""
    if len(payload) < _LEN.size:
        raise WorkloadError(f"skymoe question: {len(payload)} bytes, expected a 4-byte header "
                            "length first")
    (n,) = _LEN.unpack_from(payload)
    if n > _MAX_HEADER_BYTES or _LEN.size + n > len(payload):
        raise WorkloadError(f"skymoe question: header length {n}, expected at most "
                            f"{min(_MAX_HEADER_BYTES, len(payload) - _LEN.size)}")
    try:
        header = json.loads(payload[_LEN.size:_LEN.size + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkloadError(f"skymoe question: header is not JSON ({exc})") from None
    if not isinstance(header, dict) or not isinstance(header.get("id"), str) \
            or not isinstance(header.get("prompt"), str) or not header["prompt"]:
        raise WorkloadError(f"skymoe question: header {str(header)[:200]}, expected an object "
                            "with string id and non-empty prompt")
    image = payload[_LEN.size + n:]
    if not image:
        raise WorkloadError(f"skymoe question {header['id']}: no image bytes after the header")
    opt = {k: header.get(k) if isinstance(header.get(k), str) else None
           for k in ("task", "qtype", "reference")}
    return Question(header["id"], header["prompt"], image, **opt)


def encode_answer(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer).encode()


def decode_answer(payload: bytes) -> dict[str, Any]:
    try:
        out = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkloadError(f"skymoe answer: not JSON ({exc})") from None
    if not isinstance(out, dict) or "id" not in out:
        raise WorkloadError(f"skymoe answer: {str(out)[:200]}, expected an object with id")
    return out
