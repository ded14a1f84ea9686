"""SpaceVerse on the emulated constellation: the six methods, one testbed run each (Fig. 9).

    python experiments/spaceverse/testbed.py [--scenario experiments/spaceverse-testbed.yaml]
        [--methods spaceverse,ground-only,...] [--duration-s 240] [--per-task 20]
        [--timing paper|small] [--name NAME] [--out DIR]

Needs root (network namespaces, Open vSwitch) and the models of `make models-vlm` (W^s, W^g
and the confidence nets). Each method runs the scenario once at its speed (1 in the shipped
scenario): the satellites run W^s with the method's rule and hold each result to the emulated
device time, offloads cross the shaped ground link only while the satellite is in contact,
the ground station answers with W^g. Writes `<out>/<name>.json` (per method: the workload's
summary, per-satellite and ground figures, the command, models, timing mode) and
`<out>/<name>.md` (the table), and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from testbed.errors import TestbedError  # noqa: E402
from testbed.lifecycle.session import hold, prepare, summarize  # noqa: E402
from testbed.workloads.registry import workload_for  # noqa: E402

METHODS = ("spaceverse", "satellite-only", "ground-only", "tabi", "ai-rg", "g-image",
           "g-answer")
FIG9 = ("spaceverse", "satellite-only", "ground-only", "tabi", "ai-rg")


def _git() -> tuple[str, bool]:
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "nodes",
                                 "testbed", "experiments/spaceverse"],
                                capture_output=True, text=True).stdout.strip())
    return commit, dirty


def run_method(scenario: dict, method: str, workdir: Path, label: str | None = None) -> dict:
    """One testbed run of `scenario` with `method` (run named after `label`, default the
    method); returns the run's summary."""
    label = label or method
    doc = copy.deepcopy(scenario)
    doc["workload"]["options"]["method"] = method
    doc["name"] = f"{scenario['name']}-{label}"[:40]
    path = workdir / f"{label}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    prep = prepare(path)
    t0 = time.monotonic()
    held = hold(prep, report=lambda m: print(f"  [{label}] {m}", flush=True),
                workload=workload_for(prep))
    out = summarize(prep, held)
    out["wall_s"] = time.monotonic() - t0
    out["run_dir"] = prep.run_dir.path.name
    out["results_dir"] = prep.run_dir.results  # the per-sample files (not in the results)
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{1e3 * v:.1f}"


def table(rows: dict[str, dict]) -> str:
    """Per method: the satellites that had a contact in the run (every method sees the same
    questions there), then every question of the run."""
    head = ("| method | questions (sats in contact) | answered | accuracy | mean latency in "
            "contact (ms) | on board | transfer | ground | mean time to answer (ms) | "
            "offloaded | offloads answered | kB sent | all questions: answered | "
            "accuracy (unanswered = wrong) |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for method, w in rows.items():
        c, s = w["in_contact"], w["summary"]
        split = c["split_mean_s"]
        acc = "-" if c["accuracy_answered"] is None else f"{c['accuracy_answered']:.3f}"
        lines.append(
            f"| {method} | {c['questions']} | {c['answered']} | {acc} | "
            f"{_ms(c['mean_latency_s'])} | {_ms(split['onboard'])} | "
            f"{_ms(split['transfer'])} | {_ms(split['ground_device'])} | "
            f"{_ms(c['mean_time_to_answer_s'])} | {c['offloaded']} | {c['offloads_answered']} "
            f"| {c['bytes_sent'] / 1e3:.1f} | {s['answered']}/{s['questions']} | "
            f"{s['accuracy']:.3f} |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", type=Path, default=REPO / "experiments/spaceverse-testbed.yaml")
    ap.add_argument("--methods", default=",".join(FIG9))
    ap.add_argument("--duration-s", type=float, default=None)
    ap.add_argument("--per-task", type=int, default=None)
    ap.add_argument("--timing", choices=["small", "paper"], default=None)
    ap.add_argument("--name", default="testbed")
    ap.add_argument("--out", type=Path, default=REPO / "experiments/spaceverse/results")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"--methods: unknown {bad}; choose from {', '.join(METHODS)}")
    scenario = yaml.safe_load(args.scenario.read_text())
    opts = scenario["workload"]["options"]
    if args.duration_s is not None:
        scenario["duration_s"] = args.duration_s
    if args.per_task is not None:
        opts["per_task"] = args.per_task
    if args.timing is not None:
        opts["timing"] = args.timing
    models = Path(str(opts.get("models", ".cache/models/vlm")))
    if not models.is_absolute():
        opts["models"] = str(REPO / models)
    if "dir" in scenario.get("outputs", {}) and not Path(scenario["outputs"]["dir"]).is_absolute():
        scenario["outputs"]["dir"] = str(REPO / scenario["outputs"]["dir"])
    results: dict[str, dict] = {}
    failures: dict[str, list[str]] = {}
    args.out.mkdir(parents=True, exist_ok=True)
    commit, dirty = _git()
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            print(f"== {method}", flush=True)
            summary = None
            for attempt in (1, 2):  # a loaded host may miss the agents' health deadline
                try:
                    summary = run_method(scenario, method, Path(tmp))
                    break
                except TestbedError as exc:
                    print(f"  [{method}] attempt {attempt} failed: {exc}", flush=True)
                    failures.setdefault(method, []).append(str(exc).splitlines()[0])
            if summary is None or not summary["workload"]:
                continue
            results[method] = summary["workload"] | {
                "run": {k: summary[k] for k in ("scenario", "duration_s", "played_s", "speed",
                                                "interrupted", "contact_s", "wall_s",
                                                "run_dir")}}
            print(table({method: results[method]}), flush=True)
    argv_used = argv if argv is not None else sys.argv[1:]
    models_dir = Path(opts["models"])
    provenance = {m: json.loads((models_dir / m / "provenance.json").read_text())
                  for m in ("small-onboard", "small-ground", "confidence")
                  if (models_dir / m / "provenance.json").is_file()}
    doc = {"command": " ".join(["experiments/spaceverse/testbed.py", *argv_used]),
           "git_commit": commit, "git_dirty": dirty,
           "scenario": args.scenario.name, "duration_s": scenario["duration_s"],
           "speed": scenario["speed"], "timing": opts.get("timing", "small"),
           "per_task": opts.get("per_task"),
           "model_provenance": {k: {kk: v.get(kk) for kk in ("settings", "data_sha256",
                                                            "final_loss", "samples",
                                                            "mean_target", "calib_per_task")
                                    if kk in v} for k, v in provenance.items()},
           "failed_attempts": failures, "by_method": results}
    # model paths relative to the repository (results name no machine's folders)
    text = json.dumps(doc, indent=1, default=str).replace(str(REPO) + "/", "")
    (args.out / f"{args.name}.json").write_text(text)
    md = (f"`{doc['command']}` (commit {commit}, dirty {dirty}); scenario {args.scenario.name}, "
          f"{scenario['duration_s']:g} s at speed {scenario['speed']:g}, timing "
          f"{doc['timing']}\n\n" + table(results))
    (args.out / f"{args.name}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
