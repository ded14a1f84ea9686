"""Errors of the model adapters (nodes.models): subclasses of nodes' base error."""

from __future__ import annotations

from nodes.errors import ConfigError, NodeError


class ModelError(NodeError):
    """Base of every error the model adapters raise on purpose."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """A model directory or weight file is missing (names the path and what was expected)."""


class ModelConfigError(ModelError, ConfigError):
    """A model or training option is out of range (names the option, value and expectation)."""


class DatasetError(ModelError, ValueError):
    """A labelled data folder is missing or malformed (names the path and what was expected)."""
