"""The offload request and its answer as they cross the data plane between satellite and ground.

Owns the framing around an SVRW image (`wire.py`): which sample, which prompt, which method,
so the ground can answer without knowing the satellite's state. Standard library only.

    request = b"SVRQ" | u8 version=1 | u32 meta_len | meta (UTF-8 JSON object) | SVRW bytes
    answer  = UTF-8 JSON object {sample, answer, tokens, ground_device_s, ground_host_s, ...}

`meta` carries at least `sample` (the id) and `prompt`. A truncated or malformed request raises
WireFormatError naming the field; the SVRW part is checked by `wire.decode` on the ground.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping

from nodes.spaceverse.errors import WireFormatError

__all__ = ["MAGIC", "decode_answer", "decode_request", "encode_answer", "encode_request"]

MAGIC = b"SVRQ"
VERSION = 1
_HEAD = struct.Struct(">4sBI")
_REQUIRED = ("sample", "prompt")


def encode_request(meta: Mapping[str, object], image_wire: bytes) -> bytes:
    """One request: the sample's metadata and its SVRW-encoded image."""
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise WireFormatError(f"offload request: meta lacks {missing}, expected keys "
                              f"{', '.join(_REQUIRED)}")
    body = json.dumps(dict(meta), separators=(",", ":")).encode()
    return _HEAD.pack(MAGIC, VERSION, len(body)) + body + bytes(image_wire)


def decode_request(data: bytes) -> tuple[dict[str, object], bytes]:
    """(meta, SVRW bytes) of a request; WireFormatError on a bad magic, version or meta."""
    if len(data) < _HEAD.size:
        raise WireFormatError(f"offload request: {len(data)} bytes, truncated in the header "
                              f"(expected at least {_HEAD.size})")
    magic, version, n = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise WireFormatError(f"offload request: magic {magic!r} at offset 0, expected {MAGIC!r}")
    if version != VERSION:
        raise WireFormatError(f"offload request: version {version} at offset 4, expected "
                              f"{VERSION}")
    end = _HEAD.size + n
    if len(data) < end:
        raise WireFormatError(f"offload request: meta of {n} bytes at offset {_HEAD.size}, "
                              f"truncated after {len(data) - _HEAD.size}")
    try:
        meta = json.loads(data[_HEAD.size:end])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireFormatError(f"offload request: meta at offset {_HEAD.size} is not JSON: "
                              f"{exc}") from None
    if not isinstance(meta, dict) or any(k not in meta for k in _REQUIRED):
        raise WireFormatError(f"offload request: meta {meta!r}, expected an object with "
                              f"{', '.join(_REQUIRED)}")
    return meta, data[end:]


def encode_answer(answer: Mapping[str, object]) -> bytes:
    """The ground's answer to one request."""
    if "sample" not in answer or "answer" not in answer:
        raise WireFormatError(f"offload answer {dict(answer)!r}: expected keys sample, answer")
    return json.dumps(dict(answer), separators=(",", ":")).encode()


def decode_answer(data: bytes) -> dict[str, object]:
    """The answer object; WireFormatError when it is not one."""
    try:
        out = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireFormatError(f"offload answer: not JSON: {exc}") from None
    if not isinstance(out, dict) or "sample" not in out or "answer" not in out:
        raise WireFormatError(f"offload answer {out!r}: expected an object with sample, answer")
    return out
