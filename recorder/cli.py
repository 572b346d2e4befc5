"""`recorder` command line: one subcommand per module under `recorder.commands`.

Each command module is imported only when it runs, so `recorder run` does not pay for the
benchmark's or the room's imports before it joins (start latency is part of the contract).
A command module provides `HELP: str`, `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from recorder import __version__

# name -> module; the order is the order of `recorder --help`.
COMMANDS: dict[str, str] = {
    "run": "recorder.commands.run",
    "demo": "recorder.commands.demo",
    "render": "recorder.commands.render",
    "schema": "recorder.commands.schema",
    "validate": "recorder.commands.validate",
    "bench": "recorder.commands.bench",
    "room": "recorder.commands.room",
    "inspect": "recorder.commands.inspect",
    "upload": "recorder.commands.upload",
    "dashboard": "recorder.commands.dashboard",
    "health": "recorder.commands.health",
}


def _add_command(subparsers: argparse._SubParsersAction, name: str, module_name: str) -> None:
    module = importlib.import_module(module_name)
    parser = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
    module.add_arguments(parser)
    parser.set_defaults(_command=module)


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recorder", description="room-recorder: a native composite recorder for video rooms."
    )
    parser.add_argument("--version", action="version", version=f"room-recorder {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    # Import only the command that was asked for; list the others by name for --help.
    asked = next((arg for arg in argv if arg in COMMANDS), None)
    for name, module_name in COMMANDS.items():
        if asked is None or name == asked:
            _add_command(subparsers, name, module_name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    command = getattr(args, "_command", None)
    if command is None:
        parser.print_help()
        return 2
    return int(command.run(args))


if __name__ == "__main__":
    sys.exit(main())
