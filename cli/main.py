"""`connectome`: the command-line entry point.

Each package contributes its commands through a `commands.py` module with a
`register(subparsers)` function; this module only wires them together and turns
ConnectomeError into a one-line message and an exit status.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from volumes.errors import ConnectomeError, reason

# Packages whose commands.py adds subcommands, in the order --help lists them.
COMMAND_MODULES = [
    "volumes.commands",
    "ffn.commands",
    "synapses.commands",
    "db.commands",
    "server.commands",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="connectome", description="From an EM volume to a proofread wiring diagram.")
    parser.add_argument("--version", action="version", version=f"connectome {installed_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # that package has no commands yet
            raise
        module.register(subparsers)
    return parser


def installed_version() -> str:
    """The installed package's version (pyproject.toml), or 'unknown' when run from a bare checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("connectome")
    except PackageNotFoundError:
        return "unknown"


def add_workspace_argument(parser: argparse.ArgumentParser) -> None:
    """The --workspace option every project command takes."""
    parser.add_argument("--workspace", "-w", default=".", help="workspace directory (default: the current directory)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except ConnectomeError as exc:
        print(f"connectome: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("connectome: interrupted; finished work is kept and the command can be resumed", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: one line that says so; CONNECTOME_DEBUG=1 shows the traceback
        if os.environ.get("CONNECTOME_DEBUG"):
            raise
        print(f"connectome: internal error ({reason(exc)}); this is a bug: please report it with the output of "
              f"the same command run with CONNECTOME_DEBUG=1", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
