"""Layers a workspace shows without importing them: a precomputed volume in a bucket or on a web
server, or a precomputed, zarr or N5 volume on this machine's disks.

Registered in connectome.toml as `[external_layers.NAME]` (source, format, kind, and for local
volumes the resolved directory). The viewer reads a remote precomputed layer directly (Neuroglancer
speaks gs://, s3:// and http(s)://); a local one goes through our server's `/data/NAME/`, which
reads only inside that directory. A local volume must lie inside one of the workspace's data roots
(`[data] roots = ["/path", ...]` in connectome.toml, relative paths taken from the workspace): no
command or request reads a file outside them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from volumes.errors import InputError
from volumes.workspace import LAYER_NAME, Workspace

REMOTE_SCHEMES = ("gs://", "s3://", "https://", "http://")
FORMATS = ("precomputed", "zarr", "n5")


@dataclass(frozen=True)
class ExternalLayer:
    name: str
    source: str  # as the user gave it
    format: str  # precomputed, zarr or n5
    kind: str  # image or segmentation
    local_dir: Path | None  # the volume's directory on this machine; None for a remote one

    def viewer_source(self, server_url: str) -> str:
        """The URL a Neuroglancer viewer opens: the bucket itself, or our server for local files."""
        if self.local_dir is None:
            return "precomputed://" + _remote_url(self.source)
        return f"{self.format}://{server_url}/data/{self.name}"


def data_roots(workspace: Workspace) -> list[Path]:
    """The directories local layers may come from (resolved); none unless connectome.toml lists them."""
    roots = workspace.config.get("data", {}).get("roots", [])
    if not isinstance(roots, list) or not all(isinstance(root, str) and root for root in roots):
        raise InputError(f"{workspace.root / 'connectome.toml'}: [data] roots must be a list of directories")
    return [(workspace.root / root).resolve() for root in roots]


def external_layers(workspace: Workspace) -> dict[str, ExternalLayer]:
    """The registered external layers by name (a local one whose root was removed since is left out)."""
    layers = {}
    roots = data_roots(workspace)
    for name, entry in sorted(workspace.config.get("external_layers", {}).items()):
        local = Path(entry["local_dir"]) if entry.get("local_dir") else None
        if local is not None and not any(local.is_relative_to(root) for root in roots):
            continue
        layers[name] = ExternalLayer(name, entry["source"], entry["format"], entry["kind"], local)
    return layers


def add_external_layer(workspace: Workspace, name: str, source: str, kind: str | None = None) -> ExternalLayer:
    """Check that `source` opens (and lies inside a data root, if local), then register it; nothing is
    registered when it does not."""
    from volumes.io import TensorStoreVolume, open_volume

    if not LAYER_NAME.match(name or ""):
        raise InputError(f"invalid layer name {name!r}: use letters, digits, '_', '-' or '.', starting with a letter or digit")
    if workspace.has_layer(name) or name in workspace.config.get("external_layers", {}):
        raise InputError(f"a layer named {name!r} exists already in workspace {workspace.root}")
    layer_format, local_dir, openable = _classify(workspace, source)
    try:
        volume = TensorStoreVolume(source, Path(openable)) if layer_format == "n5" else open_volume(openable)
    except InputError:
        raise
    except Exception as exc:  # a bucket that is not there, a host that does not answer, a damaged info file
        raise InputError(f"{source}: cannot open ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    declared = getattr(volume, "layer_type", None)
    kind = kind or (declared if declared in ("image", "segmentation") else
                    "segmentation" if volume.dtype.kind in "ui" and volume.dtype.itemsize >= 4 else "image")
    if kind not in ("image", "segmentation"):
        raise InputError(f"--kind is image or segmentation, not {kind!r}")
    entry = {"source": source, "format": layer_format, "kind": kind}
    if local_dir is not None:
        entry["local_dir"] = str(local_dir)
    workspace.set_config("external_layers", name, entry)
    return ExternalLayer(name, source, layer_format, kind, local_dir)


def remove_external_layer(workspace: Workspace, name: str) -> None:
    layers = dict(workspace.config.get("external_layers", {}))
    if name not in layers:
        raise InputError(f"no external layer {name!r} in workspace {workspace.root} (external: {', '.join(layers) or 'none'})")
    workspace.remove_config("external_layers", name)


def _classify(workspace: Workspace, source: str) -> tuple[str, Path | None, str]:
    """(format, local directory or None, what volumes.io opens) for a source, refusing local paths outside the roots."""
    text = source.strip()
    layer_format = "precomputed"
    for prefix in ("precomputed://", "zarr://", "n5://"):
        if text.startswith(prefix):
            layer_format, text = prefix[:-3], text[len(prefix):]
    if text.startswith(REMOTE_SCHEMES):
        if layer_format != "precomputed":
            raise InputError(f"{source}: remote {layer_format} layers are not supported yet; remote layers must be precomputed")
        return layer_format, None, "precomputed://" + _remote_url(text)
    path = Path(text[len("file://"):] if text.startswith("file://") else text).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    resolved = path.resolve()
    roots = data_roots(workspace)
    if not any(resolved.is_relative_to(root) for root in roots):
        raise InputError(f"{source}: outside the workspace's data roots ({', '.join(map(str, roots)) or 'none configured'}); "
                         f"add a directory above it to [data] roots in {workspace.root / 'connectome.toml'}")
    if not resolved.is_dir():
        raise InputError(f"{source}: no such directory")
    if layer_format == "precomputed" and not (resolved / "info").is_file():
        layer_format = "n5" if (resolved / "attributes.json").is_file() else \
            "zarr" if any((resolved / marker).exists() for marker in (".zarray", "zarr.json")) else layer_format
    if layer_format == "precomputed":
        return layer_format, resolved, "precomputed://file://" + str(resolved)
    return layer_format, resolved, str(resolved)


def _remote_url(text: str) -> str:
    return text[len("precomputed://"):] if text.startswith("precomputed://") else text
