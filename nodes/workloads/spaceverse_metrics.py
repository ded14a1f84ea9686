"""The live metric families of the `spaceverse` workload, and the hold to emulated device time.

Standard library only: the orchestrator's dashboards import `FAMILIES` to build the workload's
row without torch, and the agents declare the same families when a job starts.

Families (`FAMILIES`; every sample also carries the agent's `node` label; the table is in
nodes/README.md): decisions per method, stage and decision; offloaded bytes; the summed
latency split by part (onboard, wait_contact, transfer, ground, reply); answers, correct
answers and accuracy so far; the ground's requests and emulated compute time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from nodes.metrics import Family, declare

__all__ = ["FAMILIES", "hold_until"]

FAMILIES: tuple[Family, ...] = (
    declare("leo_spaceverse_decisions_total", "counter",
            "On-board decisions per method, stage and decision (keep or offload).",
            ("method", "stage", "decision")),
    declare("leo_spaceverse_offloaded_bytes_total", "counter",
            "Bytes of offload requests the ground acknowledged.", ("method",), "bytes"),
    declare("leo_spaceverse_latency_seconds_total", "counter",
            "Summed per-sample latency by part: onboard, wait_contact, transfer, ground, reply.",
            ("method", "part"), "seconds"),
    declare("leo_spaceverse_answered_total", "counter",
            "Answers obtained, on board or from the ground.", ("method", "where")),
    declare("leo_spaceverse_correct_total", "counter",
            "Answers equal to the reference answer.", ("method",)),
    declare("leo_spaceverse_accuracy_ratio", "gauge",
            "Correct answers over answers obtained so far.", ("method",), "ratio"),
    declare("leo_spaceverse_ground_requests_total", "counter",
            "Offload requests the ground station answered.", ("method",)),
    declare("leo_spaceverse_ground_compute_seconds_total", "counter",
            "Emulated ground compute time of the answered requests.", ("method",), "seconds"),
)


def hold_until(start_ns: int, device_s: float, speed: float, stop: threading.Event,
               now_ns: Callable[[], int] = time.monotonic_ns) -> float:
    """Wait until `device_s` scenario seconds (= device_s / speed wall seconds) have passed
    since `start_ns` (monotonic), so the network sees the result when the emulated device
    would have produced it. Returns the wall seconds from `start_ns` to the end of the hold
    (more than the target when the host itself was slower). Ends early when `stop` is set."""
    target_ns = start_ns + int(device_s / speed * 1e9)
    left_s = (target_ns - now_ns()) / 1e9
    if left_s > 0:
        stop.wait(left_s)
    return (now_ns() - start_ns) / 1e9
