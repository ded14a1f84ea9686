"""The observers a run gets for observability: what `hold()`'s caller passes as `observers`.

Owns choosing and building them from the scenario; each observer owns its own resources.
"""

from __future__ import annotations

from typing import Any

from testbed.lifecycle.observers import RunObserver
from testbed.observability.metrics import OrchestratorExporter


def observability_observers(prep: Any, *, host: str = "127.0.0.1",
                            port: int = 0) -> list[RunObserver]:
    """The metrics exporter of a prepared run (started by `on_up`, stopped by `on_end`).

    Example: `hold(prep, observers=observability_observers(prep))`.
    """
    return [OrchestratorExporter.for_run(prep, host=host, port=port)]
