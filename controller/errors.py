"""controller's error hierarchy (controller must not import testbed, so it has its own base).

Messages name the object, the bad value and what was expected. The HTTP API carries an error's
class name so that the client re-raises the same type on the caller's side.
"""

from __future__ import annotations


class ControllerError(Exception):
    """Base of every error the controller package raises on purpose."""


class SnapshotError(ControllerError, ValueError):
    """A topology snapshot is invalid (unknown node, duplicate dpid, port used twice, ...)."""


class StaleGenerationError(ControllerError):
    """A snapshot's generation is not newer than one the controller already accepted."""

    def __init__(self, generation: int, latest: int) -> None:
        self.generation = generation
        self.latest = latest
        super().__init__(
            f"snapshot generation={generation} is stale: expected > {latest} "
            f"(or exactly {latest} with identical content)"
        )


class ControllerUnavailableError(ControllerError):
    """The controller's API did not answer (not started, crashed, wrong endpoint)."""


class ControllerRequestError(ControllerError):
    """The controller answered an API request with an error it could not classify further."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message if status is None else f"HTTP {status}: {message}")


class ControllerAuthError(ControllerError):
    """A token file is unusable, or the API refused a request for a missing or wrong token."""


class ApplyTimeoutError(ControllerError, TimeoutError):
    """A generation was not applied to every switch within the allowed time."""


class ControllerStartError(ControllerError):
    """The controller child process exited or never answered while starting."""


class SwitchError(ControllerError):
    """A switch rejected a message, disconnected or did not answer a barrier in time."""

    def __init__(self, dpid: int, message: str) -> None:
        self.dpid = dpid
        super().__init__(f"switch dpid={dpid:#x}: {message}")
