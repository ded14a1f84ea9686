"""Errors of the learned-codec adapters; each names the object, the bad value and the expected."""

from __future__ import annotations

from nodes.errors import NodeError


class CodecError(NodeError):
    """Base of every error the codec adapters raise on purpose."""


class UnknownCodecError(CodecError, KeyError):
    """A codec name that is not registered; the message lists the valid names."""

    def __init__(self, name: str, valid: list[str]):
        self.name = name
        self.valid = sorted(valid)
        self.message = f"unknown codec {name!r}; choose: {', '.join(self.valid)}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class CodecInputError(CodecError, ValueError):
    """An image tensor or training option that does not fit the codec (shape, range, value)."""


class CachedCodecError(CodecError):
    """Trained weights are missing or do not match their provenance record."""
