"""A workspace: one project directory holding its config, its precomputed layers and its store.

    W/connectome.toml      settings (database URL, server address, data roots, external layers)
    W/layers/<name>/       one Neuroglancer precomputed layer each (info, scales, mesh, ...)
    W/connectome.db        the SQLite store unless connectome.toml names another database
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import tomli_w

from volumes.atomic import write_text_atomically
from volumes.errors import InputError
from volumes.options_file import read_toml

CONFIG_NAME = "connectome.toml"
# neuPrint's body statuses: the default vocabulary of neuron status (db.annotations checks against it)
DEFAULT_STATUSES = ("Anchor", "Traced", "Roughly traced", "Prelim Roughly traced", "Orphan", "Done")
LAYER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def default_config() -> dict[str, Any]:
    return {
        "database": {"url": "sqlite:///connectome.db"},
        "server": {"host": "127.0.0.1", "port": 8080},
    }


class Workspace:
    """A project directory; every command that reads or writes project data goes through one."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        config_path = self.root / CONFIG_NAME
        if not config_path.is_file():
            raise InputError(f"{self.root} is not a workspace (no {CONFIG_NAME}); create one with 'connectome init {root}'")
        self.config = read_toml(config_path, "workspace config")

    @classmethod
    def init(cls, root: str | Path) -> "Workspace":
        """Create the directory layout and a default config; an existing workspace is left as it is."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        (root / "layers").mkdir(exist_ok=True)
        config_path = root / CONFIG_NAME
        if not config_path.exists():
            write_text_atomically(config_path, tomli_w.dumps(default_config()))
        return cls(root)

    @property
    def layers_dir(self) -> Path:
        return self.root / "layers"

    def layer_path(self, name: str) -> Path:
        """The directory of layer `name`; names are plain words so no path can escape layers/."""
        if not LAYER_NAME.match(name or ""):
            raise InputError(f"invalid layer name {name!r}: use letters, digits, '_', '-' or '.', starting with a letter or digit")
        return self.layers_dir / name

    def layer_url(self, name: str) -> str:
        """cloud-volume URL of a layer."""
        return "precomputed://file://" + str(self.layer_path(name))

    def has_layer(self, name: str) -> bool:
        return (self.layer_path(name) / "info").is_file()

    def require_layer(self, name: str) -> Path:
        path = self.layer_path(name)
        if not (path / "info").is_file():
            known = ", ".join(self.layer_names()) or "none"
            raise InputError(f"no layer {name!r} in workspace {self.root} (layers: {known})")
        return path

    def layer_info(self, name: str) -> dict[str, Any]:
        """A layer's precomputed `info`, or InputError naming the file when it is missing or not JSON."""
        return read_layer_info(self.require_layer(name))

    def layer_names(self) -> list[str]:
        if not self.layers_dir.is_dir():
            return []
        return sorted(p.name for p in self.layers_dir.iterdir() if (p / "info").is_file())

    @property
    def database_url(self) -> str:
        """SQLAlchemy URL; a relative sqlite path is taken relative to the workspace."""
        url = self.config.get("database", {}).get("url", "sqlite:///connectome.db")
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
            url = prefix + str(self.root / url[len(prefix):])
        return url

    @property
    def server_host(self) -> str:
        return str(self.config.get("server", {}).get("host", "127.0.0.1"))

    @property
    def server_port(self) -> int:
        port = self.config.get("server", {}).get("port", 8080)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InputError(f"{self.root / CONFIG_NAME}: [server] port must be an integer from 1 to 65535, not {port!r}")
        return port

    @property
    def statuses(self) -> tuple[str, ...]:
        """The neuron status vocabulary: [proofreading] statuses, by default neuPrint's body statuses."""
        statuses = self.config.get("proofreading", {}).get("statuses", DEFAULT_STATUSES)
        if not isinstance(statuses, list | tuple) or not statuses or not all(isinstance(v, str) and v.strip()
                                                                            for v in statuses):
            raise InputError(f"{self.root / CONFIG_NAME}: [proofreading] statuses must be a list of names")
        return tuple(v.strip() for v in statuses)

    def set_config(self, section: str, key: str, value: Any) -> None:
        """Change one setting and write connectome.toml back."""
        self.config.setdefault(section, {})[key] = value
        write_text_atomically(self.root / CONFIG_NAME, tomli_w.dumps(self.config))

    def remove_config(self, section: str, key: str) -> None:
        """Drop one setting and write connectome.toml back."""
        self.config.get(section, {}).pop(key, None)
        write_text_atomically(self.root / CONFIG_NAME, tomli_w.dumps(self.config))


def read_layer_info(layer_dir: Path) -> dict[str, Any]:
    """The `info` JSON of a precomputed layer directory; a damaged one is named in a one-line error."""
    path = layer_dir / "info"
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: missing; is {layer_dir} a precomputed layer?") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); re-import the layer or restore the file") from None
    if not isinstance(info, dict) or not isinstance(info.get("@type", info.get("type")), str):
        raise InputError(f"{path}: not a precomputed info file (no type)")
    return info
