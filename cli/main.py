"""`connectome`: the command-line entry point, the top floor: it imports every package's commands, none imports it.

Each command lives in the package that implements it, in a `commands.py` (or `*_commands.py`)
module with a `register(subparsers[, workspace])` function; `workspace` is the parent parser that
gives a command `--workspace/-w`. This module wires them together, in the order `--help` lists
them, and turns a ConnectomeError into a one-line message and its exit status. Command modules
import their heavy dependencies inside the handlers, so `connectome --help` stays quick.
"""
from __future__ import annotations

import argparse
import os
import sys

from db import commands as store_commands
from demo import commands as demo_commands
from ffn import commands as ffn_commands, evaluate_commands
from server import commands as server_commands
from synapses import commands as synapse_commands
from volumes import commands as volume_commands, synth_commands
from volumes.errors import ConnectomeError, reason


def workspace_parent() -> argparse.ArgumentParser:
    """The --workspace option every project command takes, as an argparse parent parser."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--workspace", "-w", default=".", help="workspace directory (default: the current directory)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="connectome", description="From an EM volume to a proofread wiring diagram.")
    parser.add_argument("--version", action="version", version=f"connectome {installed_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    workspace = workspace_parent()
    store_commands.register_init(subparsers)
    volume_commands.register(subparsers, workspace)  # import, layers, mesh
    synth_commands.register(subparsers)
    ffn_commands.register(subparsers, workspace)  # ffn import-tf | segment | train
    evaluate_commands.register(subparsers)
    synapse_commands.register(subparsers, workspace)
    store_commands.register(subparsers, workspace)  # graph, edit, user, export
    server_commands.register(subparsers, workspace)  # serve
    demo_commands.register(subparsers)
    return parser


def installed_version() -> str:
    """The installed package's version (pyproject.toml), or 'unknown' when run from a bare checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("connectome")
    except PackageNotFoundError:
        return "unknown"


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
