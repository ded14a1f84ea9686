"""`testbed job RUN NODE KIND`: submit work to a node of a running testbed and follow it.

The orchestrator of the run (`testbed up` or `run`) starts the node's agent if it is not
running (agents may start on demand), pushes it its context and submits the job; this command
then talks to the agent directly with the run's token (from the run directory) to wait for the
job, print its results and fetch its output files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from nodes import client
from testbed.errors import InputError
from testbed.lifecycle.control import request
from testbed.lifecycle.session import resolve_run_dir
from testbed.workloads.pool import read_token


def parse_options(options_json: str, sets: list[str]) -> dict[str, Any]:
    """`--options '{"a": 1}'` merged with `--set key=value` (value read as JSON when it
    parses, else as a string)."""
    try:
        opts = json.loads(options_json) if options_json else {}
    except json.JSONDecodeError as exc:
        raise InputError(f"--options: not JSON ({exc}); expected an object like "
                         "'{\"count\": 10}'") from None
    if not isinstance(opts, dict):
        raise InputError(f"--options: {options_json!r}, expected a JSON object")
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--set {item!r}: expected KEY=VALUE")
        try:
            opts[key] = json.loads(value)
        except json.JSONDecodeError:
            opts[key] = value
    return opts


def job(
    target: Path = typer.Argument(..., help="Run directory, or the scenario file of the run."),
    node: str = typer.Argument(..., help="Node name (satellite or ground station)."),
    kind: str = typer.Argument(..., help="Workload kind, e.g. message-exchange."),
    options: str = typer.Option("{}", "--options", help="Job options as a JSON object."),
    sets: list[str] = typer.Option([], "--set", help="One option as KEY=VALUE (repeatable)."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for the job to end."),
    timeout_s: float = typer.Option(600.0, "--timeout-s", help="How long --wait waits."),
    fetch: Path | None = typer.Option(None, "--fetch", help="Copy the job's output files "
                                      "into this folder when it ends."),
) -> None:
    """Submit a job (a workload kind with options) to NODE of a running testbed.

    Example: testbed job runs/demo sat0 message-exchange --set peer=gs --set count=5
    """
    run_dir = resolve_run_dir(target)
    opts = parse_options(options, sets)
    reply = request(run_dir.path / "control.sock",
                    {"op": "job", "node": node, "kind": kind, "options": opts}, timeout_s=120)
    typer.echo(json.dumps({k: reply[k] for k in ("node", "id", "kind", "state") if k in reply}))
    if not wait:
        return
    token = read_token(run_dir.path)
    final = client.wait_job(reply["addr"], reply["id"], timeout_s=timeout_s, token=token)
    typer.echo(json.dumps(final, indent=2, default=str))
    if fetch is not None:
        fetch.mkdir(parents=True, exist_ok=True)
        for entry in client.job_files(reply["addr"], reply["id"], token=token):
            name = str(entry["name"])
            client.fetch_job_file(reply["addr"], reply["id"], name, fetch / name, token=token)
            typer.echo(f"fetched {fetch / name}")
    if str(final.get("state")) != "finished":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(job)
