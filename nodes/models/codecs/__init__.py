"""Learned image codecs (CompressAI) built offline, trained here, cached with provenance.

See nodes/models/README.md. torch and compressai are imported only when a codec is built.
"""

from __future__ import annotations

from nodes.models.codecs.errors import (
    CachedCodecError,
    CodecError,
    CodecInputError,
    UnknownCodecError,
)
from nodes.models.codecs.registry import SPECS, CodecSpec, build_codec, codec_names, codec_spec
from nodes.models.codecs.store import entry_dir, load, read_provenance, save

__all__ = [
    "SPECS", "CachedCodecError", "CodecError", "CodecInputError", "CodecSpec", "UnknownCodecError",
    "build_codec", "codec_names", "codec_spec", "entry_dir", "load", "read_provenance", "save",
]
