"""`skymoe-serve` in process: a tiny SkyMoE built here serves real samples of the data folder.

Checks the requests picked, each answer's score against `nodes.skymoe.tasks.score`, the
emulated latency against the roofline of the model's own counted work, the routing totals
(k assignments per routed token, summed over requests), the live metrics as Prometheus parses
them (both renderers), the queue, cancelling, the results files and loud options. The model's
weights are random: its answers are wrong, and nothing here reads accuracy as a model figure.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nodes.clock import SystemClock
from nodes.errors import WorkloadOptionsError
from nodes.metrics import Metrics
from nodes.workloads import NodeContext, Role, create_workload, workload_kinds
from tests.nodes.conftest import REPO_ROOT
from tests.nodes.skymoe_tiny import TASKS, build_tiny_skymoe

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return build_tiny_skymoe(tmp_path_factory.mktemp("skymoe") / "tiny-e4")


@pytest.fixture(scope="module")
def data_images(shared_data: Path) -> Path:
    path = shared_data / "images"
    if not (path / "eurosat-rgb").is_dir() or not (path / "neon-trees").is_dir():
        pytest.skip(f"{path}: no eurosat-rgb or neon-trees folder")
    return path


def _ctx(out: Path | None) -> NodeContext:
    return NodeContext(name="gs", role=Role.GROUND, data_ip=None, results_dir=None,
                       metrics=Metrics({"node": "gs"}), clock=SystemClock(), output_dir=out)


def _samples(metrics_text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(metrics_text):
        for s in fam.samples:
            if s.name.startswith("leo_skymoe_"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _series(samples: dict, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def test_kind_is_registered_and_imports_no_torch() -> None:
    assert "skymoe-serve" in workload_kinds()
    code = ("import sys, nodes.workloads.skymoe_serve, nodes.workloads.skymoe_metrics; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO_ROOT, check=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_serves_the_eval_set_scores_times_and_routes(tiny_model: Path, data_images: Path,
                                                     tmp_path: Path) -> None:
    from nodes.compute import accelerator, roofline_s
    from nodes.models.skymoe import SkyMoEVLM
    from nodes.models.vlm.data import select_split
    from nodes.models.vlm.small import load_sample_image
    from nodes.skymoe.tasks import load_skymoe_samples, score

    ctx = _ctx(tmp_path / "job")
    job = create_workload("skymoe-serve", ctx, {
        "model": str(tiny_model), "data": str(data_images), "tasks": ",".join(TASKS),
        "per_task": 2, "max_new_tokens": 6, "accelerator": "rtx-3090", "efficiency": 0.25})
    assert job.progress() == {"done": 0, "total": 6, "unit": "requests"}
    job.start()
    assert job.wait(120)
    res = job.results()
    assert res["state"] == "finished", res["error"]
    summary, rows = res["summary"], res["events"]
    assert summary["requests_done"] == 6 and summary["queue_length"] == 0
    assert [r["task"] for r in rows] == list(TASKS) * 2  # interleaved, task by task
    assert {t: v["requests"] for t, v in summary["per_task"].items()} == dict.fromkeys(TASKS, 2)

    # every request is a test-split sample, and its score is the task's own rule
    test = {(f"{s.task}/{s.image_path.name}" + ("" if s.crop is None else
             "@" + ",".join(map(str, s.crop))), s.prompt): s
            for s in select_split(load_skymoe_samples(data_images, tasks=TASKS), "test")}
    vlm = SkyMoEVLM.load(tiny_model)
    acc = accelerator("rtx-3090")
    for r in rows:
        s = test[(r["image"], r["prompt"])]
        assert r["reference"] == s.answer
        sc = score(s, r["answer"])
        assert r["correct"] == sc.get("correct", sc.get("correct@0.5"))
        assert 1 <= r["tokens"] <= 6
        assert r["measured_token_s"] > 0 and r["measured_prefill_s"] > 0
        work = vlm.work(load_sample_image(s), s.prompt)
        assert r["emulated_token_s"] == pytest.approx(
            roofline_s(work.token_flops, work.token_bytes, acc, 0.25), rel=1e-9)
        assert r["emulated_prefill_s"] == pytest.approx(
            roofline_s(work.prefill_flops, work.prefill_bytes, acc, 0.25), rel=1e-9)
        assert len(r["routing"]) == 2  # MoE layers 1 and 3
    # all requests queued at once: each waited at least for the services before it
    served = 0.0
    for r in rows:
        assert r["queue_wait_s"] >= served - 1e-3
        served += r["service_s"]

    # routing: per layer, k = 2 assignments per routed token, summed over the requests
    for layer in summary["routing"]:
        per_req = [next(x for x in r["routing"] if x["layer"] == layer["layer"])
                   for r in rows]
        totals = [sum(col) for col in zip(*(x["tokens_per_expert"] for x in per_req),
                                          strict=True)]
        assert layer["tokens_per_expert"] == totals
        assert sum(totals) == 2 * layer["tokens"]
        assert 0 < layer["load_balance"] <= 1 and layer["routing_entropy_nats"] > 0

    # live metrics, parsed the way Prometheus does, from both renderers
    for text in (ctx.metrics.render(), ctx.metrics.render_text()):
        got = _samples(text)
        experts = _series(got, "leo_skymoe_expert_tokens_total")
        for layer in summary["routing"]:
            for e, n in enumerate(layer["tokens_per_expert"]):
                key = (("expert", str(e)), ("layer", str(layer["layer"])), ("model", "tiny-e4"),
                       ("node", "gs"))
                assert experts[key] == pytest.approx(n)
        for task, v in summary["per_task"].items():
            key = (("model", "tiny-e4"), ("node", "gs"), ("task", task))
            assert _series(got, "leo_skymoe_requests_total")[key] == pytest.approx(2)
            assert _series(got, "leo_skymoe_accuracy_ratio")[key] == pytest.approx(v["accuracy"])
        latency = _series(got, "leo_skymoe_token_latency_seconds")
        assert {dict(k)["timing"]: dict(k)["device"] for k in latency} == {
            "measured": "host-cpu", "emulated": "rtx-3090"}
        assert _series(got, "leo_skymoe_queue_length") == {
            (("model", "tiny-e4"), ("node", "gs")): 0}
        tokens = sum(_series(got, "leo_skymoe_generated_tokens_total").values())
        assert tokens == pytest.approx(sum(r["tokens"] for r in rows))

    # the results files
    doc = json.loads((tmp_path / "job" / "serve.json").read_text())
    assert doc["summary"]["requests_done"] == 6 and len(doc["requests"]) == 6
    assert "emulated" in doc["summary"]["timing"] and "rtx-3090" in doc["summary"]["timing"][
        "emulated"]
    with (tmp_path / "job" / "requests.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [int(r["seq"]) for r in table] == list(range(6))


def test_arrivals_queue_and_cancel(tiny_model: Path, data_images: Path) -> None:
    ctx = _ctx(None)
    job = create_workload("skymoe-serve", ctx, {
        "model": str(tiny_model), "data": str(data_images), "tasks": ["eurosat-rgb"],
        "per_task": 20, "max_new_tokens": 2, "arrival_interval_s": 0.4})
    job.start()  # the queue gauge holds every request not yet served from the start
    assert ctx.metrics.value("leo_skymoe_queue_length", model="tiny-e4") in range(1, 21)
    deadline_s = 60
    import time

    t0 = time.monotonic()
    while job.progress()["done"] < 2 and time.monotonic() - t0 < deadline_s:
        time.sleep(0.05)
    assert job.progress()["done"] >= 2
    job.stop(30)
    res = job.results()
    assert res["state"] == "stopped"
    assert 2 <= res["summary"]["requests_done"] < 20
    # arrivals every 0.4 s and a service of a few ms: requests rarely wait (the first one
    # arrives while the model loads and waits for it)
    waits = [r["queue_wait_s"] for r in res["events"][1:]]
    assert all(w < 0.4 for w in waits), waits
    assert ctx.metrics.value("leo_skymoe_queue_length", model="tiny-e4") == 0


@pytest.mark.parametrize("options,match", [
    ({"model": "NOPE"}, r"option model='.*NOPE', expected a SkyMoE model directory"),
    ({"data": "NOPE"}, r"option data='.*NOPE', expected the data folder's images/"),
    ({"tasks": "eurosat"}, r"option tasks='eurosat', expected one or more of rsvqa-lr"),
    ({"tasks": [1]}, r"option tasks=\[1\], expected a list of task names"),
    ({"split": "val"}, r"option split='val', expected one of train, calib, test"),
    ({"accelerator": "h100"}, r"option accelerator='h100'.*choose: jetson-agx-orin"),
    ({"efficiency": 2}, r"option efficiency=2.0, expected a number in \(0, 1\]"),
    ({"per_task": 0}, r"option per_task=0"),
    ({"per_tsk": 3}, r"unknown option\(s\) per_tsk"),
])
def test_bad_options_are_named(options: dict, match: str, tiny_model: Path,
                               data_images: Path, tmp_path: Path) -> None:
    opts = {"model": str(tiny_model), "data": str(data_images), "tasks": "eurosat-rgb"}
    opts.update({k: str(tmp_path / v) if v == "NOPE" else v for k, v in options.items()})
    with pytest.raises(WorkloadOptionsError, match=match):
        create_workload("skymoe-serve", _ctx(None), opts)


def test_questions_over_the_data_plane_are_answered_and_held(tiny_model: Path,
                                                             data_images: Path) -> None:
    """gs (127.0.0.2) listens; sat (127.0.0.3) asks two questions over real loopback sockets,
    one with a reference (scored) and one without, plus a malformed one (answered with its
    error); the job ends after `listen_count` answers."""
    import socket

    from nodes.context import ContextRef, RunContext
    from nodes.dataplane import DataPlane
    from nodes.models.vlm.data import select_split
    from nodes.skymoe.tasks import load_skymoe_samples, score
    from nodes.workloads.skymoe_wire import (
        ANSWER_TOPIC,
        QUESTION_TOPIC,
        Question,
        decode_answer,
        encode_question,
    )

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    peers = {"gs": "127.0.0.2", "sat": "127.0.0.3"}
    planes = {}
    try:
        for name in peers:
            ref = ContextRef()
            ref.set(RunContext(node=name, peers=peers, data_port=port, speed=2.0))
            planes[name] = DataPlane(name, peers[name], ref)
            planes[name].listen(port)
        gs_ref = ContextRef()
        gs_ref.set(RunContext(node="gs", peers=peers, data_port=port, speed=2.0))
        ctx = NodeContext(name="gs", role=Role.GROUND, data_ip=peers["gs"], results_dir=None,
                          metrics=Metrics({"node": "gs"}), clock=SystemClock(), run=gs_ref,
                          dataplane=planes["gs"])
        job = create_workload("skymoe-serve", ctx, {"model": str(tiny_model), "listen": True,
                                                    "per_task": 0, "listen_count": 2})
        job.start()
        sample = select_split(load_skymoe_samples(data_images, tasks=["eurosat-rgb"]),
                              "test")[0]
        png = sample.image_path.read_bytes()
        sat = planes["sat"]
        sat.send("gs", QUESTION_TOPIC, b"\x00\x00\x00\x05nope!")
        bad = decode_answer(sat.recv(ANSWER_TOPIC, 30).payload)
        assert "header is not JSON" in bad["error"]
        sat.send("gs", QUESTION_TOPIC, encode_question(Question(
            "q1", sample.prompt, png, sample.task, sample.qtype, sample.answer)))
        sat.send("gs", QUESTION_TOPIC, encode_question(Question("q2", "How many trees?", png)))
        answers = {a["id"]: a for a in (decode_answer(sat.recv(ANSWER_TOPIC, 60).payload)
                                        for _ in range(2))}
        assert job.wait(30)
        res = job.results()
    finally:
        for dp in planes.values():
            dp.close()
    assert res["state"] == "finished", res["error"]
    assert set(answers) == {"q1", "q2"}
    q1, q2 = answers["q1"], answers["q2"]
    assert q1["correct"] == score(sample, q1["answer"])["correct"] and q2["correct"] is None
    for a in (q1, q2):
        assert a["error"] == "" and a["model"] == "tiny-e4" and a["tokens"] >= 1
        assert a["held_s"] >= 0 and a["measured_token_s"] > 0
    rows = {r["id"]: r for r in res["events"]}
    assert rows["q1"]["source"] == rows["q2"]["source"] == "sat"
    assert rows["q1"]["task"] == "eurosat-rgb" and rows["q2"]["task"] == "remote"
    summary = res["summary"]
    assert summary["remote"]["questions"] == 2 and len(summary["remote"]["errors"]) == 1
    assert summary["per_task"]["remote"] == {"requests": 1, "accuracy": None}
    assert ctx.metrics.value("leo_skymoe_requests_total", model="tiny-e4", task="remote") == 1


def test_listen_needs_a_data_plane_and_eval_needs_data(tiny_model: Path) -> None:
    with pytest.raises(WorkloadOptionsError, match="option listen=True, expected an agent "
                                                   "with a --data-ip"):
        create_workload("skymoe-serve", _ctx(None), {"model": str(tiny_model), "listen": True,
                                                     "per_task": 0})
    with pytest.raises(WorkloadOptionsError, match="option 'data' is required"):
        create_workload("skymoe-serve", _ctx(None), {"model": str(tiny_model)})
    with pytest.raises(WorkloadOptionsError, match="option per_task=0"):
        create_workload("skymoe-serve", _ctx(None), {"model": str(tiny_model), "per_task": 0})
