"""The one options loader: a TOML file read with errors that name it, and dataclass options built from a table.

Inference options, training configs and a workspace's connectome.toml all come through here, so a
missing file, bad TOML or an unknown key is reported the same way everywhere.
"""
from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from volumes.errors import InputError

T = TypeVar("T")


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """The TOML file at `path` as a dict; InputError naming `what` and the file when it is missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} {path} is not valid TOML: {exc}") from None


def check_option_names(cls: type, table: dict[str, Any], what: str) -> dict[str, Any]:
    """`table`, once every key is a field of the options dataclass `cls`; InputError naming the others."""
    unknown = set(table) - {f.name for f in fields(cls)}
    if unknown:
        raise InputError(f"{what}: unknown option(s) {', '.join(sorted(unknown))}")
    return dict(table)


def options_from_table(cls: type[T], table: dict[str, Any], what: str) -> T:
    """A dataclass of options from a TOML table; InputError naming any key the dataclass does not have."""
    return cls(**check_option_names(cls, table, what))
