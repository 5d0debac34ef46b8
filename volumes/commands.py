"""CLI commands for workspaces and volumes: init, import, info, synth."""
from __future__ import annotations

import argparse
import json

from cli.main import add_workspace_argument
from volumes.geometry import parse_zyx
from volumes.workspace import Workspace


def register(subparsers: argparse._SubParsersAction) -> None:
    init = subparsers.add_parser("init", help="create a workspace directory")
    init.add_argument("directory", help="workspace directory to create (an existing one is kept as it is)")
    init.set_defaults(func=run_init)

    imp = subparsers.add_parser("import", help="import a volume as a Neuroglancer precomputed layer")
    imp.add_argument("source", help="precomputed URL, FILE.h5:KEY, image-stack directory or glob, .zarr, .n5, .npy, FILE.npz:KEY")
    add_workspace_argument(imp)
    imp.add_argument("--name", required=True, help="layer name in the workspace")
    imp.add_argument("--labels", action="store_true", help="the volume holds segment ids (stored as uint64)")
    imp.add_argument("--resolution", help="voxel size z,y,x in nm (overrides what the source says)")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing layer of that name")
    imp.set_defaults(func=run_import)

    info = subparsers.add_parser("layers", help="list a workspace's layers")
    add_workspace_argument(info)
    info.set_defaults(func=run_layers)

    try:
        from volumes.synth_commands import register as register_synth
    except ModuleNotFoundError:
        return
    register_synth(subparsers)


def run_init(args: argparse.Namespace) -> int:
    from db import store

    workspace = Workspace.init(args.directory)
    store.open_store(workspace, create=True).close()  # the one command (beside the builders) that makes a store
    print(f"workspace {workspace.root}")
    print(f"  config   {workspace.root / 'connectome.toml'}")
    print(f"  layers   {workspace.layers_dir}")
    print(f"  database {workspace.database_url}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from volumes.importer import import_volume

    workspace = Workspace(args.workspace)
    resolution = parse_zyx(args.resolution, "--resolution", as_float=True) if args.resolution else None
    path = import_volume(workspace, args.source, args.name, labels=args.labels, resolution_nm=resolution,
                         overwrite=args.overwrite)
    info = json.loads((path / "info").read_text())
    scales = ", ".join("x".join(str(s) for s in reversed(scale["size"])) for scale in info["scales"])
    print(f"layer {args.name}: {info['type']} {info['data_type']}, resolution "
          f"{','.join(f'{r:g}' for r in reversed(info['scales'][0]['resolution']))} nm (z,y,x), levels (z x y x x) {scales}")
    print(f"  {workspace.layer_url(args.name)}")
    return 0


def run_layers(args: argparse.Namespace) -> int:
    workspace = Workspace(args.workspace)
    for name in workspace.layer_names():
        info = workspace.layer_info(name)
        size = "x".join(str(s) for s in reversed(info["scales"][0]["size"]))
        print(f"{name}\t{info['type']}\t{info['data_type']}\t{size}")
    return 0
