"""Every option of every `connectome` command says what it is for, and `--version` answers."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from cli.main import build_parser


def _undocumented(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _undocumented(sub, prefix + (name,))
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)) and not action.help:
            missing.append(" ".join(prefix) + " " + (action.option_strings[0] if action.option_strings else action.dest))
    return missing


def test_every_option_has_a_help_string():
    assert _undocumented(build_parser()) == []


def test_version():
    result = subprocess.run([str(Path(sys.executable).with_name("connectome")), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("connectome 0."), result.stdout
