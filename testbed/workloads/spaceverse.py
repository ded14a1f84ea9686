"""spaceverse, orchestrator side: the test questions spread evenly over the satellites, each
satellite runs W^s with the chosen method and offloads over its shaped ground link while in
contact, the ground station answers with W^g; the results say per method how accurate and how
fast it was, with the latency split and the bytes that crossed the link.

The node side is `nodes/workloads/spaceverse.py` (one kind, two roles). The questions are the
`test` split of the data folder's labelled images (`nodes.models.vlm.data`, images never seen
in training), `per_task` of each task. Model and timing options are passed to the nodes
unchanged; the accelerators default to the device profiles' (`ACCELERATOR_OF_PROFILE`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from nodes import client
from nodes.workloads.spaceverse import METHODS, WITH_NETS
from testbed.errors import InputError, TestbedError
from testbed.paths import REPO_ROOT, data_dir
from testbed.workloads.base import OrchestratorWorkload
from testbed.workloads.pool import map_nodes

ACCELERATOR_OF_PROFILE = {"jetson-agx-xavier": "jetson-agx-xavier",
                          "jetson-orin": "jetson-agx-orin", "gs-server": "rtx-3090"}
"""The accelerator (nodes.compute) a device profile stands for, when options name none."""
PASSED = ("timing", "onboard_accelerator", "ground_accelerator", "efficiency", "thresholds",
          "ablation_threshold", "tabi_threshold", "alpha", "beta", "max_new_tokens", "hold",
          "send_timeout_s", "answer_timeout_s", "reply_timeout_s", "workers", "torch_threads",
          "link_delay_ms")
"""Options handed to the node jobs unchanged (they check them)."""
OWN = ("method", "data", "models", "onboard_model", "ground_model", "confidence", "per_task",
       "tasks", "seed", "ground", "link_rate_mbps")
LATENCY_PARTS = ("onboard_s", "wait_contact_s", "transfer_s", "ground_queue_s",
                 "ground_device_s", "reply_s")


class SpaceVerseRunError(TestbedError):
    """A node's spaceverse job failed or its results could not be read (names the node)."""


def _field(name: str) -> str:
    return f"workload.options.{name}"


class SpaceVerse(OrchestratorWorkload):
    """SpaceVerse or one of its baselines on the emulated constellation (see the module doc)."""

    kind = "spaceverse"

    def __init__(self, prep: Any) -> None:
        super().__init__(prep)
        self.jobs: dict[str, str] = {}
        self.station: str | None = None
        self.node_opts = self._node_options()  # bad options fail before anything is created
        self.started_ns = 0

    # options -----------------------------------------------------------------------------------
    def _node_options(self) -> dict[str, Any]:
        opts = self.options
        unknown = sorted(set(opts) - set(PASSED) - set(OWN))
        if unknown:
            raise InputError(f"workload spaceverse: unknown option(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(sorted(PASSED + OWN))}", field=_field(unknown[0]))
        method = opts.get("method", "spaceverse")
        if method not in METHODS:
            raise InputError(f"workload spaceverse: method={method!r}, expected one of "
                             f"{', '.join(METHODS)}", field=_field("method"))
        models = Path(str(opts.get("models", REPO_ROOT / ".cache/models/vlm")))
        out: dict[str, Any] = {k: opts[k] for k in PASSED if k in opts}
        out["method"] = method
        for name, default in (("onboard_model", f"small:{models / 'small-onboard'}"),
                              ("ground_model", f"small:{models / 'small-ground'}")):
            spec = str(opts.get(name, default))
            kind, _, where = spec.partition(":")
            if not where or not Path(where).is_dir():
                raise InputError(f"workload spaceverse: {name}={spec!r}: model directory "
                                 f"{where!r} does not exist (train the small models with "
                                 "`make models-vlm`)", field=_field(name))
            out[name] = spec
        if method in WITH_NETS:
            nets = Path(str(opts.get("confidence", models / "confidence")))
            if not nets.is_dir():
                raise InputError(f"workload spaceverse: method {method} needs the trained "
                                 f"confidence nets; {str(nets)!r} does not exist (train them "
                                 "with `make models-vlm`)", field=_field("confidence"))
            out["confidence"] = str(nets)
        rate = opts.get("link_rate_mbps")
        if rate is None:
            rate = self.prep.scenario.links.ground.downlink.rate_mbps or 110.67
        out["link_rate_mbps"] = float(rate)
        for name, acc_name in (("satellite", "onboard_accelerator"),
                               ("ground", "ground_accelerator")):
            profile = getattr(self.prep.scenario.nodes, name).profile
            if acc_name not in out and profile in ACCELERATOR_OF_PROFILE:
                out[acc_name] = ACCELERATOR_OF_PROFILE[profile]
        self.questions = self._questions(opts)
        return out

    def _questions(self, opts: dict[str, Any]) -> list[dict[str, Any]]:
        from nodes.models.errors import DatasetError
        from nodes.models.vlm.data import TASKS, load_samples, select_split, subsample

        images = Path(str(opts.get("data", data_dir() / "images")))
        if not images.is_dir():
            raise InputError(f"workload spaceverse: data={str(images)!r}, expected the data "
                             "folder's images/ (labelled images)", field=_field("data"))
        tasks = opts.get("tasks", list(TASKS))
        per_task = opts.get("per_task", 10)
        if type(per_task) is not int or per_task < 1:
            raise InputError(f"workload spaceverse: per_task={per_task!r}, expected an "
                             "integer >= 1", field=_field("per_task"))
        try:
            samples = load_samples(images, tasks)
        except DatasetError as exc:
            raise InputError(f"workload spaceverse: {exc}", field=_field("tasks")) from None
        chosen = subsample(select_split(samples, "test"), per_task, int(opts.get("seed", 0)))
        if not chosen:
            raise InputError(f"workload spaceverse: no test questions in {images} for tasks "
                             f"{tasks}", field=_field("tasks"))
        return [{"id": f"{s.image_key}#{i}", "task": s.task, "qtype": s.qtype,
                 "image": str(s.image_path), "crop": list(s.crop) if s.crop else None,
                 "prompt": s.prompt, "answer": s.answer} for i, s in enumerate(chosen)]

    def _station(self) -> str:
        stations = [gs.name for gs in self.prep.scenario.ground_stations]
        wanted = self.options.get("ground")
        if not stations:
            raise InputError("workload spaceverse needs a ground station", field="ground_stations")
        if wanted is None:
            return stations[0]
        if wanted not in stations:
            raise InputError(f"workload spaceverse: ground={wanted!r} is not a ground station; "
                             "choose: " + ", ".join(stations), field=_field("ground"))
        return str(wanted)

    # run ---------------------------------------------------------------------------------------
    def shares(self, satellites: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The questions spread evenly over `satellites` (round robin: sizes differ by <= 1)."""
        out: dict[str, list[dict[str, Any]]] = {s: [] for s in satellites}
        for i, q in enumerate(self.questions):
            out[satellites[i % len(satellites)]].append(q)
        return {s: qs for s, qs in out.items() if qs}

    def _submit(self, node: str, options: dict[str, Any]) -> None:
        assert self.pool is not None
        self.jobs[node] = str(self.pool.submit(node, self.kind, options)["id"])

    def _start(self) -> None:
        plan = self.net.plan
        self.station = gs = self._station()
        sats = [n.name for n in plan.nodes if n.role == "satellite"]
        assert self.pool is not None
        self.pool.ensure([gs, *sats])
        self._submit(gs, {k: v for k, v in self.node_opts.items()
                          if k not in ("onboard_model", "confidence", "link_rate_mbps")})
        sat_opts = {k: v for k, v in self.node_opts.items() if k != "ground_model"}
        self.started_ns = time.monotonic_ns()
        share = self.shares(sats)
        map_nodes(lambda name: self._submit(name, {**sat_opts, "ground": gs,
                                                    "questions": share[name]}), list(share))

    def _results(self, node: str) -> dict[str, Any]:
        """Cancel the node's job (409: it had ended) and read its results with events."""
        assert self.pool is not None
        addr, job_id = self.pool.addr(node), self.jobs[node]
        try:
            client.cancel_job(addr, job_id, timeout_s=30.0, token=self.pool.token)
        except client.AgentApiError as exc:
            if exc.status != 409:
                raise
        return client.job_results(addr, job_id, events=True, token=self.pool.token)

    def _in_contact(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The summary over the satellites that had a contact during the run (the paper's
        'latency within contact' population: every method sees the same questions)."""
        sats = _contact_sats(self.prep)
        mine = [r for r in rows if r["satellite"] in sats]
        return {"satellites": sats, **summarise(mine, len(mine))}

    def stop(self) -> dict[str, Any]:
        if not self.jobs or self.net is None:
            return {}
        gs = self.station or self._station()
        sats = [n for n in self.jobs if n != gs]
        sat_res = map_nodes(self._results, sats)
        gs_res = map_nodes(self._results, [gs]).get(gs, {})
        rows = [dict(r, satellite=name) for name, res in sat_res.items()
                for r in res.get("events") or []]
        ground_rows = list(gs_res.get("events") or [])
        folder = self.prep.run_dir.results
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "spaceverse-samples.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows))
        (folder / "spaceverse-ground.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in ground_rows))
        failed = {n: r.get("error") for n, r in {**sat_res, gs: gs_res}.items()
                  if r.get("state") == "failed"}
        return {"kind": self.kind, "station": gs, "method": self.node_opts["method"],
                "timing": {"mode": self.node_opts.get("timing", "small"),
                           "onboard_accelerator": self.node_opts.get("onboard_accelerator",
                                                                     "jetson-agx-xavier"),
                           "ground_accelerator": self.node_opts.get("ground_accelerator",
                                                                    "rtx-3090"),
                           "efficiency": self.node_opts.get("efficiency", 0.5),
                           "speed": self.prep.scenario.speed},
                "models": {"onboard": self.node_opts["onboard_model"],
                           "ground": self.node_opts["ground_model"],
                           "confidence": self.node_opts.get("confidence")},
                "summary": summarise(rows, len(self.questions)),
                "in_contact": self._in_contact(rows),
                "per_satellite": {n: r.get("summary", {}) for n, r in sat_res.items()},
                "ground": gs_res.get("summary", {}),
                "ground_answers_not_returned": sum(r.get("reply") != "sent"
                                                   for r in ground_rows),
                "failed": failed,
                "files": ["spaceverse-samples.jsonl", "spaceverse-ground.jsonl"]}


def _contact_sats(prep: Any) -> list[str]:
    """Satellites with a ground contact window that opens before the run's end."""
    from testbed.lifecycle.session import contact_windows

    end_s = prep.scenario.duration_s
    return sorted(n for n, ws in contact_windows(prep.timeline).items()
                  if any(w["start_s"] < end_s for w in ws)
                  and n not in {g.name for g in prep.scenario.ground_stations})


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


def summarise(rows: list[dict[str, Any]], questions: int) -> dict[str, Any]:
    """One method's figures from the satellites' per-sample records: accuracy over every
    question (an unanswered one counts as wrong) and over the answered ones, mean latency
    within contact (on-board + transfer + ground) and time to answer (with the wait for a
    contact), the mean latency split, offloads, bytes and exits per stage."""
    answered = [r for r in rows if r["status"] in ("kept", "answered")]
    offloaded = [r for r in rows if r["offload"]]
    stages: dict[str, int] = {}
    for r in rows:
        key = f"{'offload' if r['offload'] else 'keep'}@{r['exit_stage'] + 1}" \
            if r["exit_stage"] >= 0 else ("offload" if r["offload"] else "keep")
        stages[key] = stages.get(key, 0) + 1
    correct = sum(bool(r["correct"]) for r in answered)
    return {
        "questions": questions, "processed": len(rows), "answered": len(answered),
        "correct": correct,
        "accuracy": correct / questions if questions else None,
        "accuracy_answered": correct / len(answered) if answered else None,
        "mean_latency_s": _mean([r["latency_s"] for r in answered]),
        "mean_time_to_answer_s": _mean([r["time_to_answer_s"] for r in answered]),
        "split_mean_s": {p.removesuffix("_s"): _mean([r[p] for r in answered
                                                      if r.get(p) is not None])
                         for p in LATENCY_PARTS},
        "offloaded": len(offloaded),
        "offloads_answered": sum(r["status"] == "answered" for r in rows),
        "bytes_offloaded": sum(r["bytes_offloaded"] for r in offloaded
                               if r["status"] in ("sent", "answered")),
        "bytes_sent": sum(r.get("bytes_sent", 0) for r in rows),
        "decisions": stages,
        "unanswered": {s: sum(r["status"] == s for r in rows)
                       for s in ("queued", "sent", "no-contact")},
        "mean_onboard_host_s": _mean([r["onboard_host_s"] for r in rows]),
    }
