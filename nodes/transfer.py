"""The downlink data plane in one import: ground receiver, satellite sender, per-file events.

The seed of every later workload's data plane. Wire format: nodes/protocol.py; receiver:
nodes/receiver.py; sender: nodes/sender.py. Both record one FileEvent per file with
`time.monotonic_ns()` and wall UTC stamps.
"""

from nodes.events import FileEvent, FileStatus
from nodes.protocol import Ack, AckStatus, FileHeader
from nodes.receiver import GroundReceiver, SenderTally
from nodes.sender import SatelliteSender, SenderConfig

__all__ = ["Ack", "AckStatus", "FileEvent", "FileHeader", "FileStatus", "GroundReceiver",
           "SatelliteSender", "SenderConfig", "SenderTally"]
