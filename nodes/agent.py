"""The node agent process: one per node, serving the management API and running workloads.

Owns the process: command line, JSON logs on stderr, signals, the HTTP server's thread. The
state lives in NodeAgent (service.py). Runs inside the node (namespace + cgroup here, a VM or
board in the lab), so its workloads inherit the node's network view and CPU/memory budget.

    python -m nodes.agent --name sat1 --role satellite --mgmt-listen 10.255.0.2:9100 \\
        --data-ip 10.0.0.2 --results /run/testbed/sat1 --token-file /run/testbed/token

Every request but `GET /health` needs the run's bearer token (`--token-file`, mode 0600 or
stricter); without one the agent refuses to start unless `--insecure-no-token` is given.
SIGTERM or SIGINT: stop every job, write `<results>/<name>.json`, exit 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from nodes.addr import format_hostport, parse_hostport
from nodes.api import make_server
from nodes.auth import read_token_file
from nodes.errors import AuthError, ConfigError
from nodes.service import NodeAgent
from nodes.workloads import Role

log = logging.getLogger("nodes.agent")


class _JsonLogFormatter(logging.Formatter):
    """One JSON object per line on stderr: time, level, node, message and any extra fields."""

    _STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def __init__(self, node: str):
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        out = {"t_utc": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
               "node": self.node, "logger": record.name, "msg": record.getMessage()}
        out.update({k: v for k, v in vars(record).items() if k not in self._STD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nodes.agent", description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True, help="node name (satellite or ground station)")
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument("--mgmt-listen", required=True,
                   help="IP:PORT of the management API (port 0: any free port, printed)")
    p.add_argument("--data-ip", default=None, help="the node's address on the data network")
    p.add_argument("--results", type=Path, default=None, help="folder for <name>.json")
    p.add_argument("--stop-timeout-s", type=float, default=10.0,
                   help="how long SIGTERM waits for the workload to stop")
    p.add_argument("--token-file", type=Path, default=None,
                   help="file holding the run's bearer token (mode 0600 or stricter)")
    p.add_argument("--insecure-no-token", action="store_true",
                   help="serve without a token (tests only): anyone who reaches the port may "
                        "run jobs")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def _token(args: argparse.Namespace) -> str | None:
    """The token from --token-file; None only with --insecure-no-token."""
    if args.token_file is not None and args.insecure_no_token:
        raise ConfigError("--token-file and --insecure-no-token: expected one of them")
    if args.token_file is not None:
        return read_token_file(args.token_file)
    if not args.insecure_no_token:
        raise ConfigError("no --token-file: expected the run's token file (mode 0600), or "
                          "--insecure-no-token to serve without authentication")
    log.warning("serving without a token (--insecure-no-token)")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the agent until SIGTERM/SIGINT; prints one JSON line with the bound address."""
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLogFormatter(args.name))
    logging.basicConfig(level=args.log_level, handlers=[handler], force=True)
    try:
        token = _token(args)
        host, port = parse_hostport(args.mgmt_listen, allow_zero_port=True)
        agent = NodeAgent(args.name, Role(args.role), data_ip=args.data_ip,
                          results_dir=args.results)
        server = make_server(agent, host, port, token=token)
    except (ConfigError, AuthError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    bound = format_hostport(*server.server_address[:2])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="mgmt-api", daemon=True)
    thread.start()
    print(json.dumps({"event": "listening", "mgmt": bound, "pid": os.getpid(),
                      "node": args.name}), flush=True)
    log.info("agent listening", extra={"mgmt": bound, "role": args.role,
                                       "auth": "token" if token else "none"})
    try:
        while not stop.wait(0.2):
            pass
    finally:
        server.shutdown()
        thread.join(5.0)
        try:
            path = agent.close(args.stop_timeout_s)
        finally:
            server.server_close()
    log.info("agent stopped", extra={"results": str(path) if path else None})
    return 0


if __name__ == "__main__":
    sys.exit(main())
