"""What runs on a node: the node agent and its workloads. Deployable alone to a board or VM.

nodes knows nothing about the orchestrator, skyfield or pyroute2. See nodes/README.md.
"""

__all__: list[str] = []
