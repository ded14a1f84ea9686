"""The orchestrator and CLI: scenarios, orbit and topology engine, backends, fabric, run clock.

Uses netem, controller and nodes; never the inside of a model. See testbed/README.md.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("leo-testbed")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
