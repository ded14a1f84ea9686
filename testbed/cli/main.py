"""Entry point of the `testbed` command.

Each command module exposes `register(app)`; this file only assembles them and turns
TestbedError/NetemError into a one-line message and exit status 2 (no traceback).
`main(argv)` is what tests call.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import click
import typer

from netem.errors import NetemError
from testbed import __version__
from testbed.cli.console import CliConsole
from testbed.errors import TestbedError

# Modules that add commands; each has `register(app: typer.Typer) -> None`.
COMMAND_MODULES: list[str] = [
    "testbed.cli.scenario_cmd",
    "testbed.cli.trace_cmd",
    "testbed.cli.lifecycle_cmd",
    "testbed.cli.job_cmd",
    "testbed.cli.replay_cmd",
    "testbed.cli.verify_cmd",
    "testbed.cli.observe_cmd",
]

err_console = CliConsole(stderr=True)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"testbed {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="testbed",
        help=(
            "Emulate a LEO satellite constellation on this machine (or the lab's rack): "
            "orbits from TLEs, links replaying Starlink traces, Open vSwitch and an SDN "
            "controller, and node agents running the on-board and ground models."
        ),
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version_callback, is_eager=True,
            help="Print the version and exit.",
        ),
    ) -> None:
        """LEO satellite Earth-observation emulation testbed."""

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with `argv` (default: sys.argv[1:]); returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(build_app())
    try:
        # without standalone mode click returns the exit code of typer.Exit(code)
        result = command.main(args=args, prog_name="testbed", standalone_mode=False)
    except (TestbedError, NetemError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 130
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
