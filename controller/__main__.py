"""`python -m controller --of-port P --api-port Q --token-file T [--state-file F]`: run the app.

Owns the process entry only: parse arguments, set os-ken's CONF, log to stderr (the parent
redirects it to a file), run the app until SIGTERM/SIGINT. Started by `ControllerProcess`.
The API needs the run's bearer token (`--token-file`, mode 0600 or stricter); without one the
controller refuses to start (exit 2) unless `--insecure-no-token` is given.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from controller.auth import read_token_file
from controller.errors import ControllerAuthError


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m controller", description=__doc__.splitlines()[0])
    ap.add_argument("--of-port", type=int, required=True, help="OpenFlow TCP listen port")
    ap.add_argument("--api-port", type=int, required=True, help="HTTP API port")
    ap.add_argument("--host", default="127.0.0.1", help="listen address of both (127.0.0.1)")
    ap.add_argument("--state-file", default=None, help="keep the applied snapshot here")
    ap.add_argument("--reply-timeout-s", type=float, default=5.0, help="barrier reply timeout")
    ap.add_argument("--token-file", default=None, help="the API's bearer token (mode 0600)")
    ap.add_argument("--insecure-no-token", action="store_true",
                    help="serve the API without a token (tests only)")
    ap.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if (args.token_file is None) == (not args.insecure_no_token):
        print("error: expected exactly one of --token-file (the run's token, mode 0600) and "
              "--insecure-no-token", file=sys.stderr)
        return 2
    if args.token_file is not None:
        try:
            read_token_file(Path(args.token_file))  # refuse before os-ken starts
        except ControllerAuthError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from os_ken import cfg
    from os_ken.base.app_manager import AppManager

    import controller.app  # noqa: F401 - registers the leo_controller CONF group

    conf = cfg.CONF
    conf(args=[], project="os_ken", default_config_files=[])
    conf.set_override("ofp_listen_host", args.host)
    conf.set_override("ofp_tcp_listen_port", args.of_port)
    conf.set_override("api_host", args.host, group="leo_controller")
    conf.set_override("api_port", args.api_port, group="leo_controller")
    conf.set_override("state_file", args.state_file, group="leo_controller")
    conf.set_override("reply_timeout_s", args.reply_timeout_s, group="leo_controller")
    conf.set_override("token_file", args.token_file, group="leo_controller")
    conf.set_override("insecure_no_token", args.insecure_no_token, group="leo_controller")

    def _stop(signum: int, _frame: FrameType | None) -> None:
        # os-ken's native hub cannot stop its threads; leave at once, flows stay in the switches.
        logging.getLogger("controller").info("signal %d: exiting", signum)
        logging.shutdown()
        os._exit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    logging.getLogger("controller").info(
        "starting: OpenFlow %s:%d, API %s:%d, pid %d",
        args.host,
        args.of_port,
        args.host,
        args.api_port,
        os.getpid(),
    )
    try:
        AppManager.run_apps(["controller.app"])
    except Exception:
        # os-ken's threads are not daemons: without _exit a failed start would hang here
        logging.getLogger("controller").exception("controller failed")
        logging.shutdown()
        os._exit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
