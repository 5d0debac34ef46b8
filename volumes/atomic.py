"""Files written whole or not at all: write to a temporary name beside the target, then rename over it.

A reader (or a resumed run) never sees half a file, and a crash leaves the old file in place. The
temporary name keeps the target's suffix, so writers that add one (numpy's `.npy`/`.npz`) do not
rename it behind our back.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """A temporary path to write; on success it replaces `path` (with permissions `mode` when given)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield temporary
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomically(path: str | Path, text: str, mode: int | None = None) -> Path:
    with atomic_path(path, mode) as temporary:
        temporary.write_text(text)
    return Path(path)


def write_json_atomically(path: str | Path, data: Any, indent: int | None = 2, mode: int | None = None,
                          default: Any = None) -> Path:
    return write_text_atomically(path, json.dumps(data, indent=indent, default=default) + "\n", mode)
