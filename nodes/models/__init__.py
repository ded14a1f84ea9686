"""Model adapters that run on a node (codecs here; VLMs beside them). Imports torch lazily.

See nodes/models/README.md. Each subpackage loads its framework only when used, so the agent
process stays small on nodes that run no model.
"""

from __future__ import annotations

__all__: list[str] = []
