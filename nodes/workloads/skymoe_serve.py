"""`skymoe-serve`: the ground station's agent serves a SkyMoE model to a queue of requests.

The requests are an evaluation set: SkyMoE's tasks (`nodes.skymoe.tasks`) of one split of the
data folder, `per_task` of each task (chosen by a hash, so the same set every time), arriving
all at once or one every `arrival_interval_s`, served first come first served. Per request the
job records the answer, its score (`nodes.skymoe.tasks.score`), the tokens generated, the
measured prefill and per-token latency on this host and the emulated ones on the ground
accelerator (`nodes.compute` roofline of the model's counted work), the time spent queued, and
for a mixture-of-experts model the tokens per expert per layer and the routing entropy. Live
metrics (`skymoe_metrics.FAMILIES`) follow each request; `serve.json` and `requests.csv` in the
job's folder hold everything at the end, with the model's provenance and the timing mode.

With `listen`, questions from satellites arriving over the data plane (`skymoe_wire`: topic
`skymoe/ask`, an image and a prompt) join the same queue; each answer goes back to its sender
on `skymoe/answer`, held until the emulated ground GPU would have produced it (scenario time:
the emulated seconds divided by the run's speed) when the host was faster than that.

Options (JSON; `--set key=value` from `testbed job`):

| option | default | meaning |
|---|---|---|
| `model` | required | SkyMoE model directory (`config.json`, `weights.pt`; `make models-skymoe`) |
| `data` | required | the data folder's `images/` |
| `tasks` | every SkyMoE task | list, or comma-separated names (`eurosat-rgb,neon-count`) |
| `split` | `test` | `train`, `calib` or `test` (split by image) |
| `per_task` | 10 | requests per task |
| `split_seed`, `eurosat_per_class` | the model's, else 0, 150 | split and subsampling of training |
| `max_new_tokens` | 24 | answer length limit |
| `accelerator` | `rtx-3090` | ground GPU of the emulated times (`nodes.compute.ACCELERATORS`) |
| `efficiency` | 0.5 | fraction of the accelerator's peak the roofline assumes |
| `arrival_interval_s` | 0 | one request arrives every this many seconds (0: all queued at start) |
| `listen` | false | also serve questions from the data plane (`per_task` may then be 0) |
| `listen_count` | none | with `listen`: end after answering this many (none: until cancelled) |
| `torch_threads` | 1 | torch CPU threads of the job |

The module imports no torch: the model loads in the job's thread (`skymoe_engine`), so creating
the job answers at once and a bad option is a 400 naming it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import statistics
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodes.compute import DEFAULT_EFFICIENCY, accelerator
from nodes.errors import ConfigError, WorkloadOptionsError
from nodes.models.errors import DatasetError
from nodes.models.vlm.data import Sample
from nodes.workloads.base import NodeContext, Workload
from nodes.workloads.options import Options
from nodes.workloads.registry import register_workload
from nodes.workloads.skymoe_metrics import FAMILIES

__all__ = ["CSV_COLUMNS", "SkyMoEServe", "eval_requests"]

SPLITS = ("train", "calib", "test")
CSV_COLUMNS = ("seq", "source", "id", "task", "qtype", "family", "image", "prompt",
               "reference", "answer", "correct", "abs_error", "iou", "tokens", "queue_wait_s",
               "measured_prefill_s", "measured_token_s", "emulated_prefill_s",
               "emulated_token_s", "service_s")


@dataclass(frozen=True)
class Request:
    """One question to serve: `seq` its arrival order, `arrival_s` its arrival offset from the
    job's start (seconds). A question from the data plane also carries its image's bytes, its
    sender (`src`) and the sender's id for it (`qid`); its sample is scored only when the
    sender gave task, question type and reference."""

    seq: int
    sample: Sample
    arrival_s: float
    image: bytes | None = None
    src: str | None = None
    qid: str | None = None


def eval_requests(samples: list[Sample], tasks: list[str], per_task: int,
                  interval_s: float) -> list[Request]:
    """`per_task` samples of each task, picked by a hash of image and prompt (not file order),
    interleaved task by task so every task's accuracy moves from the first requests on."""
    by_task: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_task[s.task].append(s)
    picked = []
    for task in tasks:
        group = sorted(by_task.get(task, []), key=lambda s: hashlib.sha256(
            f"{s.image_key}|{s.prompt}".encode()).digest())
        picked.append(group[:per_task])
    order = [g[i] for i in range(max((len(g) for g in picked), default=0))
             for g in picked if i < len(g)]
    return [Request(i, s, i * interval_s) for i, s in enumerate(order)]


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "mean": statistics.fmean(values),
            "p50": statistics.median(values), "max": max(values)}


@register_workload("skymoe-serve")
class SkyMoEServe(Workload):
    """Loads the model, then serves the queued requests one at a time until none is left."""

    def __init__(self, ctx: NodeContext, options: Mapping[str, object] | None,
                 on_end: Callable[[Workload], None] | None = None):
        super().__init__(ctx, options, on_end)
        opts = Options(self.kind, options)
        self.model_dir = Path(opts.text("model"))
        self.listen = opts.flag("listen", False)
        self.listen_count = opts.integer("listen_count", None, low=1)
        self.per_task = opts.integer("per_task", 10, low=0 if self.listen else 1)
        data = opts.text("data", None)
        if data is None and self.per_task:
            raise WorkloadOptionsError(f"workload {self.kind}: option 'data' is required "
                                       f"(per_task={self.per_task} evaluation requests)")
        self.data_dir = Path(data) if data is not None else None
        opts.ignore("tasks")  # a list or a comma-separated string: read below
        self.split = opts.text("split", "test")
        seed = opts.integer("split_seed", None, low=0)
        per_class = opts.integer("eurosat_per_class", None, low=1)
        self.max_new_tokens = opts.integer("max_new_tokens", 24, low=1, high=512)
        self.accelerator = opts.text("accelerator", "rtx-3090")
        self.efficiency = opts.number("efficiency", DEFAULT_EFFICIENCY)
        self.interval_s = opts.number("arrival_interval_s", 0.0, positive=False)
        self.threads = opts.integer("torch_threads", 1, low=1, high=256)
        opts.finish()
        if self.listen and ctx.dataplane is None:
            raise self._bad("listen", True, "an agent with a --data-ip (no data plane here)")
        if self.listen_count is not None and not self.listen:
            raise self._bad("listen_count", self.listen_count, "only with listen: true")
        self._check(seed, per_class)
        self._data_lock = threading.Lock()
        self._inbox: deque[Request] = deque()
        self._remote_errors: list[str] = []
        self._remote_done = 0
        self._remote_seq = 0
        self._records: list[dict[str, Any]] = []
        self._queue_len = len(self.requests)
        self._loaded_s: float | None = None
        self._params: dict[str, int] = {}
        self._routing: dict[int, dict[str, Any]] = {}  # layer -> cumulative routing
        for family in FAMILIES:
            ctx.metrics.add_family(family)

    def _bad(self, name: str, value: object, expected: str) -> WorkloadOptionsError:
        return WorkloadOptionsError(f"workload {self.kind}: option {name}={value!r}, "
                                    f"expected {expected}")

    def _check(self, seed: int | None, per_class: int | None) -> None:
        """Checks what can be checked without torch, and loads the request set."""
        from nodes.skymoe.tasks import SKYMOE_TASKS, load_skymoe_samples

        if not (self.model_dir / "config.json").is_file():
            raise self._bad("model", str(self.model_dir), "a SkyMoE model directory holding "
                            "config.json and weights.pt (build one with `make models-skymoe`)")
        config = json.loads((self.model_dir / "config.json").read_text())
        self.model_name = str(config.get("name") or self.model_dir.name)
        if self.data_dir is not None and not self.data_dir.is_dir():
            raise self._bad("data", str(self.data_dir), "the data folder's images/ directory")
        raw = self.options.get("tasks")
        if raw is None:
            tasks = list(SKYMOE_TASKS)
        elif isinstance(raw, str):
            tasks = [t.strip() for t in raw.split(",") if t.strip()]
        elif isinstance(raw, list) and all(isinstance(t, str) for t in raw):
            tasks = list(raw)
        else:
            raise self._bad("tasks", raw, "a list of task names or a comma-separated string")
        unknown = [t for t in tasks if t not in SKYMOE_TASKS]
        if not tasks or unknown:
            raise self._bad("tasks", raw, f"one or more of {', '.join(SKYMOE_TASKS)}")
        self.tasks = list(dict.fromkeys(tasks))
        if self.split not in SPLITS:
            raise self._bad("split", self.split, f"one of {', '.join(SPLITS)}")
        try:
            accelerator(self.accelerator)
        except ConfigError as exc:
            raise self._bad("accelerator", self.accelerator, str(exc)) from None
        if self.efficiency > 1:
            raise self._bad("efficiency", self.efficiency, "a number in (0, 1]")
        prov = _provenance(self.model_dir)
        self.split_seed = seed if seed is not None else int(prov.get("split_seed") or 0)
        self.eurosat_per_class = (per_class if per_class is not None
                                  else int(prov.get("eurosat_per_class") or 150))
        self.provenance = prov
        from nodes.models.vlm.data import select_split

        if self.data_dir is None:  # listening only
            self._train, self.requests = [], []
            return
        try:
            samples = load_skymoe_samples(self.data_dir, seed=self.split_seed, tasks=self.tasks,
                                          eurosat_per_class=self.eurosat_per_class)
        except DatasetError as exc:
            raise self._bad("data", str(self.data_dir), f"SkyMoE's data ({exc})") from None
        self._train = select_split(samples, "train", self.split_seed)
        chosen = select_split(samples, self.split, self.split_seed)
        self.requests = eval_requests(chosen, self.tasks, self.per_task, self.interval_s)
        if not self.requests:
            raise self._bad("tasks", self.tasks, f"tasks with samples in split {self.split}")

    # lifecycle -------------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Nothing to acquire before start: the model loads in the job's thread."""
        self._set_queue(len(self.requests))

    def _cleanup(self) -> None:
        """Writes `serve.json` and `requests.csv` into the job's folder, and empties the
        queue gauge (requests left are not waiting any more)."""
        self._set_queue(0)
        out = self.ctx.output_dir
        if out is None:
            return
        out.mkdir(parents=True, exist_ok=True)
        with self._data_lock:
            rows = [dict(r) for r in self._records]
        with (out / "requests.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        doc = {"schema": 1, "kind": self.kind, "node": self.ctx.name, "options": self.options,
               "summary": self._summary(0.0), "requests": rows}
        (out / "serve.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")

    def progress(self) -> dict[str, object] | None:
        with self._data_lock:
            done = len(self._records)
        total: int | None = len(self.requests)
        if self.listen:  # listening without a count has no known total
            total = None if self.listen_count is None else len(self.requests) + self.listen_count
        return {"done": done, "total": total, "unit": "requests"}

    def _set_queue(self, n: int) -> None:
        with self._data_lock:
            self._queue_len = n
        self.ctx.metrics.set("leo_skymoe_queue_length", n, model=self.model_name)

    def _run(self, stop: threading.Event) -> bool:
        import torch

        from nodes.workloads.skymoe_engine import ServedModel

        torch.set_num_threads(self.threads)
        t_load = time.monotonic()
        model = ServedModel.load(self.model_dir, self.accelerator, self.efficiency)
        with self._data_lock:
            self._loaded_s = time.monotonic() - t_load
            self._params = model.params()
        start = time.monotonic()
        receiver = None
        if self.listen:
            receiver = threading.Thread(target=self._receive, args=(stop, start),
                                        name="skymoe-serve-receive", daemon=True)
            receiver.start()
        try:
            return self._serve(stop, start, model)
        finally:
            if receiver is not None:
                stop.set()  # the receiver ends with the job
                receiver.join(5)

    def _serve(self, stop: threading.Event, start: float, model: Any) -> bool:
        """First come, first served: evaluation arrivals and data-plane questions, one queue."""
        from nodes.models.vlm.small import load_image, load_sample_image

        pending = deque(self.requests)
        queue: deque[Request] = deque()
        while True:
            if stop.is_set():
                return False
            now_s = time.monotonic() - start
            while pending and pending[0].arrival_s <= now_s:
                queue.append(pending.popleft())
            with self._data_lock:
                queue.extend(self._inbox)
                self._inbox.clear()
                remote_done = self._remote_done
            self._set_queue(len(queue))
            if not queue:
                remote_over = not self.listen or (self.listen_count is not None
                                                  and remote_done >= self.listen_count)
                if not pending and remote_over:
                    return True
                wait_s = pending[0].arrival_s - now_s if pending else 0.05
                if stop.wait(min(max(wait_s, 0.0), 0.05 if self.listen else wait_s)):
                    return False
                continue
            req = queue.popleft()
            self._set_queue(len(queue))
            wait_s = max(0.0, time.monotonic() - start - req.arrival_s)
            t0 = time.perf_counter()
            image = (load_sample_image(req.sample) if req.image is None
                     else load_image(io.BytesIO(req.image)))
            answer = model.answer(image, req.sample.prompt, self.max_new_tokens)
            service_s = time.perf_counter() - t0
            row = self._record(req, answer, wait_s, service_s, model.accelerator_name)
            if req.src is not None:
                self._reply(stop, req, row, answer, service_s, model.name)

    def _receive(self, stop: threading.Event, start: float) -> None:
        """Data-plane questions into the inbox; a malformed one is answered with its error."""
        from nodes.errors import DataPlaneError, RecvTimeoutError, WorkloadError
        from nodes.workloads.skymoe_wire import QUESTION_TOPIC, decode_question

        dp = self.ctx.require_dataplane()
        while not stop.is_set():
            try:
                msg = dp.recv(QUESTION_TOPIC, timeout_s=0.2)
            except RecvTimeoutError:
                continue
            try:
                q = decode_question(msg.payload)
            except WorkloadError as exc:
                self._fail(dp, msg.src, "", str(exc))
                continue
            except DataPlaneError as exc:  # pragma: no cover -- recv raises only timeouts
                self._fail(dp, msg.src, "", str(exc))
                continue
            sample = Sample(q.task or "remote", Path(f"{msg.src}/{q.id}"), q.prompt,
                            q.reference or "", q.qtype or "")
            with self._data_lock:
                seq = len(self.requests) + self._remote_seq
                self._remote_seq += 1
                self._inbox.append(Request(seq, sample, time.monotonic() - start,
                                           q.image, msg.src, q.id))

    def _fail(self, dp: Any, src: str, qid: str, error: str) -> None:
        from nodes.errors import DataPlaneError
        from nodes.workloads.skymoe_wire import ANSWER_TOPIC, encode_answer

        with self._data_lock:
            self._remote_errors.append(f"{src}: {error}")
        try:
            dp.send(src, ANSWER_TOPIC, encode_answer({"id": qid, "error": error}))
        except DataPlaneError as exc:
            with self._data_lock:
                self._remote_errors.append(f"{src}: reply: {exc}")

    def _reply(self, stop: threading.Event, req: Request, row: dict[str, Any], answer: Any,
               service_s: float, model_name: str) -> None:
        """Holds the answer until the emulated GPU would have produced it, then sends it."""
        from nodes.errors import ContextError, DataPlaneError
        from nodes.workloads.skymoe_wire import ANSWER_TOPIC, encode_answer

        try:
            speed = self.ctx.run_context().speed
        except ContextError:
            speed = 1.0
        emulated_s = answer.emulated_prefill_s + answer.tokens * answer.emulated_token_s
        held_s = max(0.0, emulated_s / speed - service_s)
        if held_s:
            stop.wait(held_s)
        reply = {"id": req.qid, "answer": row["answer"], "tokens": row["tokens"],
                 "correct": row["correct"], "model": model_name, "held_s": held_s, "error": "",
                 **{k: row[k] for k in ("measured_prefill_s", "measured_token_s",
                                        "emulated_prefill_s", "emulated_token_s",
                                        "queue_wait_s")}}
        try:
            self.ctx.require_dataplane().send(str(req.src), ANSWER_TOPIC, encode_answer(reply))
        except DataPlaneError as exc:
            with self._data_lock:
                self._remote_errors.append(f"{req.src}: reply to {req.qid}: {exc}")
        with self._data_lock:
            self._remote_done += 1

    def _record(self, req: Request, answer: Any, wait_s: float, service_s: float,
                device: str) -> dict[str, Any]:
        """Scores one answer, keeps its row and moves the live metrics."""
        from nodes.skymoe.tasks import score, task_family

        s = req.sample
        sc: dict[str, Any] = {}
        correct: bool | None = None
        family = ""
        if req.src is None or (s.answer and s.qtype):
            try:
                family = task_family(s)
                sc = dict(score(s, answer.text))
                correct = bool(sc.get("correct", sc.get("correct@0.5", False)))
            except DatasetError:  # a remote question whose reference does not fit its task
                sc, correct = {}, None
        row: dict[str, Any] = {
            "seq": req.seq, "source": "eval" if req.src is None else req.src,
            "id": req.qid or "", "task": s.task, "qtype": s.qtype, "family": family,
            "image": _image_name(s) if req.src is None else str(s.image_path),
            "prompt": s.prompt, "reference": s.answer,
            "answer": answer.text, "correct": correct, "abs_error": sc.get("abs_error", ""),
            "iou": sc.get("iou", ""), "tokens": answer.tokens, "queue_wait_s": wait_s,
            "measured_prefill_s": answer.prefill_s, "measured_token_s": answer.measured_token_s,
            "emulated_prefill_s": answer.emulated_prefill_s,
            "emulated_token_s": answer.emulated_token_s, "service_s": service_s,
            "routing": [{"layer": r["layer"], "tokens_per_expert": r["tokens_per_expert"],
                         "routing_entropy_nats": r["routing_entropy_nats"]}
                        for r in answer.routing]}
        m, name = self.ctx.metrics, self.model_name
        with self._data_lock:
            self._records.append(row)
            done = [r for r in self._records
                    if r["task"] == s.task and r["correct"] is not None]
            for r in answer.routing:
                acc = self._routing.setdefault(r["layer"], {
                    "tokens": 0, "entropy_sum": 0.0,
                    "tokens_per_expert": [0] * len(r["tokens_per_expert"])})
                acc["tokens"] += r["tokens"]
                acc["entropy_sum"] += r["routing_entropy_nats"] * r["tokens"]
                acc["tokens_per_expert"] = [a + b for a, b in zip(
                    acc["tokens_per_expert"], r["tokens_per_expert"], strict=True)]
            routing = {layer: dict(v) for layer, v in self._routing.items()}
        right = sum(1 for r in done if r["correct"])
        m.inc("leo_skymoe_requests_total", 1, model=name, task=s.task)
        if correct is not None:
            m.inc("leo_skymoe_correct_total", int(correct), model=name, task=s.task)
            m.set("leo_skymoe_accuracy_ratio", right / len(done), model=name, task=s.task)
        m.inc("leo_skymoe_generated_tokens_total", answer.tokens, model=name, task=s.task)
        if answer.token_s:
            n = len(answer.token_s)
            for timing, dev, per in (("measured", "host-cpu", answer.measured_token_s),
                                     ("emulated", device, answer.emulated_token_s)):
                m.set("leo_skymoe_token_latency_seconds", per, model=name, timing=timing,
                      device=dev)
                m.inc("leo_skymoe_token_time_seconds_total", per * n, model=name,
                      timing=timing, device=dev)
        for r in answer.routing:
            layer = str(r["layer"])
            for e, count in enumerate(r["tokens_per_expert"]):
                m.inc("leo_skymoe_expert_tokens_total", count, model=name, layer=layer,
                      expert=str(e))
            acc = routing[r["layer"]]
            m.set("leo_skymoe_routing_entropy_nats", acc["entropy_sum"] / acc["tokens"],
                  model=name, layer=layer)
            m.set("leo_skymoe_load_balance_ratio", _balance(acc["tokens_per_expert"]),
                  model=name, layer=layer)
        return row

    # results ---------------------------------------------------------------------------------
    def _summary(self, elapsed_s: float) -> dict[str, object]:
        from nodes.skymoe.metrics import majority_answers
        from nodes.skymoe.tasks import score

        with self._data_lock:
            rows = [dict(r) for r in self._records]
            routing = {layer: dict(v) for layer, v in self._routing.items()}
            loaded_s, params, queue_len = self._loaded_s, dict(self._params), self._queue_len
            remote_errors = list(self._remote_errors)
        majority = majority_answers(self._train)
        samples = {r.seq: r.sample for r in self.requests}
        per_task: dict[str, dict[str, Any]] = {}
        for task in dict.fromkeys([*self.tasks, *(r["task"] for r in rows)]):
            done = [r for r in rows if r["task"] == task and r["correct"] is not None]
            unscored = sum(1 for r in rows if r["task"] == task and r["correct"] is None)
            if not done:
                if unscored:
                    per_task[task] = {"requests": unscored, "accuracy": None}
                continue
            maj = []
            for r in done:
                s = samples.get(r["seq"])
                if s is None or r["source"] != "eval":
                    continue
                guess = majority.get((s.task, s.qtype), majority.get((s.task, "*"), ""))
                sc = score(s, guess)
                maj.append(bool(sc.get("correct", sc.get("correct@0.5", False))))
            entry: dict[str, Any] = {
                "requests": len(done) + unscored,
                "accuracy": sum(r["correct"] for r in done) / len(done),
                "majority_accuracy": sum(maj) / len(maj) if maj else None}
            errors = [float(r["abs_error"]) for r in done if r["abs_error"] != ""]
            if errors:
                entry["mae"] = statistics.fmean(errors)
            ious = [float(r["iou"]) for r in done if r["iou"] != ""]
            if ious:
                entry["mean_iou"] = statistics.fmean(ious)
            per_task[task] = entry
        tokens = sum(int(r["tokens"]) for r in rows)
        return {
            "model": self.model_name, "model_dir": str(self.model_dir),
            "model_provenance": self.provenance, **params, "load_s": loaded_s,
            "data": str(self.data_dir), "tasks": self.tasks, "split": self.split,
            "split_seed": self.split_seed, "eurosat_per_class": self.eurosat_per_class,
            "requests_total": len(self.requests), "requests_done": len(rows),
            "queue_length": queue_len, "tokens": tokens,
            "accuracy": _mean([bool(r["correct"]) for r in rows if r["correct"] is not None]),
            "remote": {"questions": sum(1 for r in rows if r["source"] != "eval"),
                       "errors": remote_errors},
            "per_task": per_task,
            "timing": {"measured": f"this host's CPU, {self.threads} torch thread(s), "
                                   "wall clock per decoding step",
                       "emulated": f"roofline of the model's counted FLOPs and bytes on "
                                   f"{self.accelerator}, efficiency {self.efficiency}",
                       "accelerator": self.accelerator, "efficiency": self.efficiency},
            "measured_token_s": _stats([float(r["measured_token_s"]) for r in rows
                                        if r["tokens"]]),
            "emulated_token_s": _stats([float(r["emulated_token_s"]) for r in rows
                                        if r["tokens"]]),
            "measured_prefill_s": _stats([float(r["measured_prefill_s"]) for r in rows]),
            "emulated_prefill_s": _stats([float(r["emulated_prefill_s"]) for r in rows]),
            "queue_wait_s": _stats([float(r["queue_wait_s"]) for r in rows]),
            "routing": [{"layer": layer, "tokens": v["tokens"],
                         "tokens_per_expert": v["tokens_per_expert"],
                         "routing_entropy_nats": v["entropy_sum"] / v["tokens"],
                         "load_balance": _balance(v["tokens_per_expert"])}
                        for layer, v in sorted(routing.items()) if v["tokens"]],
        }

    def _events(self) -> list[dict[str, object]]:
        with self._data_lock:
            return [dict(r) for r in self._records]


def _mean(values: list[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def _balance(tokens_per_expert: list[int]) -> float:
    """Entropy of the experts' shares normalised by log(E): 1 = even load, 0 = one expert."""
    import math

    total = sum(tokens_per_expert)
    if len(tokens_per_expert) < 2 or not total:
        return 1.0
    ent = -sum(c / total * math.log(c / total) for c in tokens_per_expert if c)
    return ent / math.log(len(tokens_per_expert))


def _image_name(s: Sample) -> str:
    """The image's path under its task folder, with the tile for NEON crops."""
    name = f"{s.task}/{s.image_path.name}"
    return name if s.crop is None else f"{name}@{','.join(map(str, s.crop))}"


def _provenance(model_dir: Path) -> dict[str, Any]:
    """`provenance.json` of a model trained by `make models-skymoe` (split seed, EuroSAT
    subsampling, data digest), without importing torch; empty when absent."""
    path = model_dir / "provenance.json"
    if not path.is_file():
        return {}
    prov = json.loads(path.read_text())
    settings = prov.get("settings", {})
    parent = prov.get("parent", {}).get("settings", {})
    return {"split_seed": prov.get("split", {}).get("seed"),
            "eurosat_per_class": settings.get("eurosat_per_class",
                                              parent.get("eurosat_per_class")),
            "source": prov.get("source"), "data_sha256": prov.get("data_sha256")}
