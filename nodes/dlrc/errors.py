"""DLRC's errors; each names the object, the bad value and what was expected."""

from __future__ import annotations

from nodes.errors import NodeError


class DlrcError(NodeError):
    """Base of every error nodes.dlrc raises on purpose."""


class DlrcConfigError(DlrcError, ValueError):
    """A DLRC option out of range (rounds, representative mode, priority rule, image size)."""


class UnsupportedCodecError(DlrcError):
    """A registered codec whose entropy model DLRC's filter does not handle."""


class PayloadError(DlrcError):
    """Base of the errors about one satellite's received payload."""


class TruncatedPayloadError(PayloadError):
    """The payload is shorter than its header says."""


class CorruptPayloadError(PayloadError):
    """Bad magic, unknown version, checksum mismatch or an inconsistent header field."""


class MapFormatError(PayloadError):
    """The assignment map does not decompress or refers to a vector that cannot exist yet."""


class MissingReferenceError(PayloadError):
    """A map copies a vector of a higher-priority satellite whose payload was not decoded first."""
