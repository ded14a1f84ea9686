"""Workload registry, option checks and the shared lifecycle, in process on loopback."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from nodes.clock import SystemClock
from nodes.errors import NodeError, UnknownWorkloadError, WorkloadOptionsError, WorkloadStateError
from nodes.metrics import Metrics
from nodes.workloads import (
    RESULT_KEYS,
    WORKLOADS,
    NodeContext,
    Role,
    Workload,
    WorkloadState,
    create_workload,
    register_workload,
    workload_kinds,
)
from nodes.workloads.downlink_files import list_files


def ctx(name: str, role: Role, results_dir: Path | None = None) -> NodeContext:
    return NodeContext(name=name, role=role, data_ip="127.0.0.1", results_dir=results_dir,
                       metrics=Metrics({"node": name}), clock=SystemClock())


def test_unknown_kind_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownWorkloadError, match="unknown workload 'downlink_files'; "
                                                   "choose: dlrc, downlink-files") as info:
        create_workload("downlink_files", ctx("sat1", Role.SATELLITE), {})
    assert info.value.valid == workload_kinds()


def test_registry_keys_are_kebab_case() -> None:
    with pytest.raises(NodeError, match="kebab-case"):
        register_workload("Downlink_Files")
    assert all(k == k.lower() and "_" not in k for k in WORKLOADS)


@pytest.mark.parametrize("options,match", [
    ({"ground_ip": "127.0.0.1"}, "option 'source' is required"),
    ({"source": "/nonexistent", "ground_ip": "127.0.0.1"}, "expected an existing folder"),
    ({"ground_ip": "127.0.0.1", "sourc": "x"}, "option 'source' is required"),
    ({"ground_ip": "127.0.0.1", "window": 0, "source": "IMAGES"}, "window=0"),
    ({"ground_ip": "127.0.0.1", "duration_s": -1, "source": "IMAGES"}, "duration_s=-1"),
    ({"ground_ip": "127.0.0.1", "ground_port": "7000", "source": "IMAGES"}, "an integer"),
    ({"ground_ip": "127.0.0.1", "source": "IMAGES", "pattern": "*.tif"}, "no file matching"),
    ({"ground_ip": "127.0.0.1", "source": "IMAGES", "widnow": 4}, "unknown option.*widnow"),
])
def test_bad_options_are_loud(options: dict[str, object], match: str, images_dir: Path) -> None:
    opts = {k: (str(images_dir) if v == "IMAGES" else v) for k, v in options.items()}
    with pytest.raises(WorkloadOptionsError, match=match):
        create_workload("downlink-files", ctx("sat1", Role.SATELLITE), opts)


def test_list_files_natural_order(images_dir: Path) -> None:
    names = [p.name for p in list_files(images_dir, "*.png")]
    assert names[:3] == ["0.png", "1.png", "2.png"] and "qa.json" not in names
    assert len(names) == len(list(images_dir.glob("*.png")))


def test_downlink_lifecycle_both_roles_same_result_keys(images_dir: Path,
                                                        tmp_path: Path) -> None:
    ended: list[str] = []
    ground = create_workload("downlink-files", ctx("gs", Role.GROUND, tmp_path),
                             {"ground_port": _free_port(), "store": True},
                             on_end=lambda w: ended.append(w.ctx.name))
    ground.start()
    port = int(str(ground.results()["summary"]["listen"]).rsplit(":", 1)[1])  # type: ignore
    sat = create_workload("downlink-files", ctx("sat1", Role.SATELLITE),
                          {"source": str(images_dir), "ground_ip": "127.0.0.1",
                           "ground_port": port, "duration_s": 30},
                          on_end=lambda w: ended.append(w.ctx.name))
    sat.start()
    with pytest.raises(WorkloadStateError, match="start in state running"):
        sat.start()
    assert sat.wait(20) and sat.state is WorkloadState.FINISHED
    assert ground.stop() is WorkloadState.STOPPED
    assert sorted(ended) == ["gs", "sat1"]
    sat_res, gs_res = sat.results(), ground.results()
    assert tuple(sat_res) == tuple(gs_res) == RESULT_KEYS
    n = len(list(images_dir.glob("*.png")))
    total = sum(p.stat().st_size for p in images_dir.glob("*.png"))
    assert sat_res["summary"]["files_delivered"] == n  # type: ignore[index]
    assert sat_res["summary"]["bytes_delivered"] == total  # type: ignore[index]
    assert gs_res["summary"]["senders"]["sat1"]["bytes_received"] == total  # type: ignore
    assert len(list((tmp_path / "received" / "sat1").iterdir())) == n
    goodput = sat_res["summary"]["goodput_bps"]  # type: ignore[index]
    assert goodput == pytest.approx(total * 8 / sat_res["elapsed_s"], rel=1e-6)  # type: ignore
    assert len(sat_res["events"]) == n  # type: ignore[arg-type]
    assert sat_res["started_utc"] < sat_res["ended_utc"]  # type: ignore[operator]
    assert sat.ctx.metrics.value("leo_node_workload_running", kind="downlink-files") == 0


def test_ground_port_in_use_fails_start_and_stays_idle() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        ground = create_workload("downlink-files", ctx("gs", Role.GROUND),
                                 {"ground_port": port})
        with pytest.raises(NodeError, match="cannot listen"):
            ground.start()
    assert ground.state is WorkloadState.IDLE


def test_a_crashing_workload_ends_failed_with_its_error() -> None:
    class Boom(Workload):
        def _prepare(self) -> None:
            """Nothing to hold."""

        def _run(self, stop: threading.Event) -> bool:
            raise RuntimeError("disk on fire")

        def _cleanup(self) -> None:
            """Nothing to release."""

        def _summary(self, elapsed_s: float) -> dict[str, object]:
            return {}

        def _events(self) -> list[dict[str, object]]:
            return []

    Boom.kind = "boom"
    w = Boom(ctx("sat1", Role.SATELLITE), {})
    w.start()
    assert w.wait(5) and w.state is WorkloadState.FAILED
    assert w.results()["error"] == "RuntimeError: disk on fire"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
