"""SkyMoE as SpaceVerse's ground model W^g, against the dense ground model, on the testbed.

    python experiments/skymoe/spaceverse_ground.py [--ground skymoe-e4=skymoe:DIR ...]
        [--duration-s 240] [--per-task 40] [--name NAME] [--out DIR]

Needs root (namespaces, Open vSwitch), `make models-vlm` (W^s for the satellites) and
`make models-skymoe` (the dense SkyMoE and the MoE one). One testbed run per ground model of
experiments/spaceverse-testbed.yaml with the `ground-only` method (every question is sent raw
to the station, where W^g answers it and the answer is held to W^g's emulated time on the
station's GPU), on the RSVQA-LR and -HR questions: the only prompts both model families were
trained on word for word. Accuracy is scored on the presence and comparison questions (yes/no;
the SpaceVerse data bins counts and areas, SkyMoE answers them exactly, so those are left out).
Writes `<out>/<name>.json` and `.md`.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from experiments.spaceverse.testbed import run_method  # noqa: E402

SCORED_QTYPES = ("presence", "comp")
TASKS = ["rsvqa-lr", "rsvqa-hr"]
DEFAULT_GROUND = ("dense=skymoe:.cache/models/skymoe/dense",
                  "skymoe-e4=skymoe:.cache/models/skymoe/skymoe-e4",
                  "small-ground=small:.cache/models/vlm/small-ground")


def run_one(scenario: dict, label: str, spec: str, workdir: Path) -> tuple[dict, list[dict]]:
    """One ground-only testbed run with W^g = `spec`; returns its summary and sample rows."""
    doc = copy.deepcopy(scenario)
    doc["workload"]["options"].update(ground_model=spec, tasks=TASKS, timing="small")
    summary = run_method(doc, "ground-only", workdir, label=label)
    samples = summary.pop("results_dir") / "spaceverse-samples.jsonl"
    rows = [json.loads(line) for line in samples.read_text().splitlines() if line.strip()]
    return summary, rows


def scored(rows: list[dict]) -> dict:
    """Accuracy over answered presence/comparison questions; ground time per request."""
    mine = [r for r in rows if r.get("qtype") in SCORED_QTYPES and r.get("status") == "answered"]
    per_qtype = {q: [r["correct"] for r in mine if r["qtype"] == q] for q in SCORED_QTYPES}

    def mean(key: str) -> float | None:
        vals = [r[key] for r in mine if r.get(key) is not None]
        return statistics.fmean(vals) if vals else None

    return {"answered": len(mine),
            "questions": sum(r.get("qtype") in SCORED_QTYPES for r in rows),
            "accuracy": (sum(r["correct"] for r in mine) / len(mine)) if mine else None,
            "accuracy_per_qtype": {q: (sum(v) / len(v) if v else None, len(v))
                                   for q, v in per_qtype.items()},
            "ground_device_s": mean("ground_device_s"), "ground_host_s": mean("ground_host_s"),
            "latency_s": mean("latency_s"),
            "ground_timing": next((r["ground_timing"] for r in mine if r.get("ground_timing")),
                                  None)}


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{1e3 * v:.3g}"


def table(results: dict[str, dict]) -> str:
    head = ("| W^g | answered / asked | accuracy | presence (n) | comparison (n) | ground time "
            "emulated (ms) | ground time measured here (ms) | mean latency in contact (ms) |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for label, r in results.items():
        s = r["scored"]
        acc = "-" if s["accuracy"] is None else f"{s['accuracy']:.3f}"
        q = {k: ("-" if a is None else f"{a:.3f}") + f" ({n})"
             for k, (a, n) in s["accuracy_per_qtype"].items()}
        lines.append(f"| {label} | {s['answered']} / {s['questions']} | {acc} | "
                     f"{q['presence']} | {q['comp']} | {_ms(s['ground_device_s'])} | "
                     f"{_ms(s['ground_host_s'])} | {_ms(s['latency_s'])} |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", type=Path, default=REPO / "experiments/spaceverse-testbed.yaml")
    ap.add_argument("--ground", action="append", default=None, metavar="LABEL=SPEC",
                    help="a ground model to compare (repeatable); default: dense SkyMoE, "
                         "SkyMoE with 4 experts, the small ground VLM")
    ap.add_argument("--duration-s", type=float, default=240)
    ap.add_argument("--per-task", type=int, default=40)
    ap.add_argument("--name", default="spaceverse-ground")
    ap.add_argument("--out", type=Path, default=REPO / "experiments/skymoe/results")
    args = ap.parse_args(argv)
    grounds = {}
    for item in args.ground or DEFAULT_GROUND:
        label, sep, spec = item.partition("=")
        kind, sep2, folder = spec.partition(":")
        if not (sep and sep2 and label and folder):
            ap.error(f"--ground {item!r}: expected LABEL=KIND:DIR, e.g. "
                     "skymoe-e4=skymoe:.cache/models/skymoe/skymoe-e4")
        path = Path(folder) if Path(folder).is_absolute() else REPO / folder
        if not path.is_dir():
            ap.error(f"--ground {item!r}: {path} does not exist (make models-skymoe / "
                     "make models-vlm)")
        grounds[label] = f"{kind}:{path}"
    scenario = yaml.safe_load(args.scenario.read_text())
    scenario["name"] = "sv-ground"
    scenario["duration_s"] = args.duration_s
    opts = scenario["workload"]["options"]
    opts["per_task"] = args.per_task
    opts["models"] = str(REPO / opts.get("models", ".cache/models/vlm"))
    scenario.setdefault("outputs", {})["dir"] = str(REPO / "runs")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, spec in grounds.items():
            print(f"== {label}: {spec}", flush=True)
            summary, rows = run_one(scenario, label, spec, Path(tmp))
            failed = (summary.get("workload") or {}).get("failed") or {}
            if failed:  # a job that failed on a node makes every figure of the run meaningless
                node, error = next(iter(failed.items()))
                print(f"{label}: the spaceverse job failed on {len(failed)} node(s), e.g. "
                      f"{node}: {str(error).strip().splitlines()[-1]}", file=sys.stderr)
                return 1
            results[label] = {"model": spec, "scored": scored(rows),
                              "workload_summary": (summary.get("workload") or {}).get("summary"),
                              "wall_s": summary["wall_s"]}
            provenance = Path(spec.partition(":")[2]) / "provenance.json"
            if provenance.is_file():
                p = json.loads(provenance.read_text())
                results[label]["provenance"] = {k: p.get(k) for k in
                                                ("settings", "data_sha256", "wall_s", "torch")
                                                if k in p}
            print(table({label: results[label]}), flush=True)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    argv_used = argv if argv is not None else sys.argv[1:]
    doc = {"command": " ".join(["experiments/skymoe/spaceverse_ground.py", *argv_used]),
           "git_commit": commit, "scenario": args.scenario.name,
           "duration_s": args.duration_s, "per_task": args.per_task, "tasks": TASKS,
           "method": "ground-only", "timing": "small (each W^g's own work on the station's "
           "GPU by the roofline of nodes.compute)", "scored_qtypes": SCORED_QTYPES,
           "by_ground_model": results}
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=1, default=str).replace(str(REPO) + "/", "")
    (args.out / f"{args.name}.json").write_text(text)
    md = (f"`{doc['command']}` (commit {commit}); {args.scenario.name}, {args.duration_s:g} s, "
          f"ground-only, RSVQA-LR/HR presence and comparison questions\n\n" + table(results))
    (args.out / f"{args.name}.md").write_text(md.replace(str(REPO) + "/", ""))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
