"""SpaceVerse's errors: subclasses of nodes' base error, naming object, value and expectation."""

from __future__ import annotations

from nodes.errors import ConfigError, NodeError


class SpaceVerseError(NodeError):
    """Base of every error the SpaceVerse core raises on purpose."""


class SpaceVerseConfigError(SpaceVerseError, ConfigError):
    """A SpaceVerse parameter is out of range (names it, the value and what was expected)."""


class WireFormatError(SpaceVerseError, ValueError):
    """A preprocessed-image message is truncated or corrupted (names the offset and field)."""
