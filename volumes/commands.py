"""CLI commands for volumes: import, layers [add|remove], mesh (`connectome synth` is volumes/synth_commands.py, `init` db/commands.py)."""
from __future__ import annotations

import argparse
import json

from volumes.errors import InputError
from volumes.geometry import parse_zyx
from volumes.workspace import Workspace


def register(subparsers: argparse._SubParsersAction, workspace: argparse.ArgumentParser) -> None:
    imp = subparsers.add_parser("import", parents=[workspace], help="import a volume as a Neuroglancer precomputed layer")
    imp.add_argument("source", help="precomputed URL, FILE.h5:KEY, image-stack directory or glob, .zarr, .n5, .npy, FILE.npz:KEY")
    imp.add_argument("--name", required=True, help="layer name in the workspace")
    imp.add_argument("--labels", action="store_true", help="the volume holds segment ids (stored as uint64)")
    imp.add_argument("--resolution", help="voxel size z,y,x in nm (overrides what the source says)")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing layer of that name")
    imp.set_defaults(func=run_import)

    info = subparsers.add_parser("layers", parents=[workspace],
                                 help="list a workspace's layers; add or remove external ones (shown without importing)")
    info.set_defaults(func=run_layers)
    actions = info.add_subparsers(dest="layers_command", metavar="ACTION")
    late_workspace = argparse.ArgumentParser(add_help=False)  # -w after the action too, without clobbering one before it
    late_workspace.add_argument("--workspace", "-w", default=argparse.SUPPRESS, help="workspace directory")
    add = actions.add_parser("add", parents=[late_workspace],
                             help="register an external layer: precomputed://gs://..., s3://, https://, or a local "
                                  "precomputed, zarr array or N5 dataset directory inside the data roots")
    add.add_argument("name", help="layer name in the workspace")
    add.add_argument("source", help="precomputed://gs://BUCKET/PATH, precomputed://https://..., file:///DIR, DIR, zarr://DIR, n5://DIR")
    add.add_argument("--kind", choices=["image", "segmentation"], help="what the layer holds (default: from its info or data type)")
    add.set_defaults(func=run_layers_add)
    remove = actions.add_parser("remove", parents=[late_workspace], help="unregister an external layer (its data is untouched)")
    remove.add_argument("name", help="external layer to unregister")
    remove.set_defaults(func=run_layers_remove)

    mesh = subparsers.add_parser("mesh", parents=[workspace],
                                 help="mesh every supervoxel of a segmentation layer for Neuroglancer (multi-resolution, sharded)")
    mesh.add_argument("--segmentation", default="segmentation", help="segmentation layer name (default: segmentation)")
    mesh.add_argument("--format", choices=["multires", "legacy"], default="multires",
                      help="multires: Neuroglancer's multi-resolution sharded meshes, a few files however large the "
                           "volume (default); legacy: one manifest per supervoxel and one file per supervoxel per chunk")
    mesh.add_argument("--chunk-shape", default="256,256,256", metavar="Z,Y,X",
                      help="voxels meshed at a time; memory follows it (default: 256,256,256)")
    mesh.add_argument("--overwrite", action="store_true", help="re-mesh even if meshes exist")
    mesh.add_argument("--no-progress", action="store_true", help="no progress bar")
    mesh.set_defaults(func=run_mesh)


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
    from volumes.external_layers import external_layers

    workspace = Workspace(args.workspace)
    for name in workspace.layer_names():
        info = workspace.layer_info(name)
        size = "x".join(str(s) for s in reversed(info["scales"][0]["size"]))
        print(f"{name}\t{info['type']}\t{info['data_type']}\t{size}")
    for layer in external_layers(workspace).values():
        print(f"{layer.name}\t{layer.kind}\texternal {layer.format}\t{layer.source}")
    return 0


def run_layers_add(args: argparse.Namespace) -> int:
    from volumes.external_layers import add_external_layer

    layer = add_external_layer(Workspace(args.workspace), args.name, args.source, args.kind)
    where = "read by the viewer directly" if layer.local_dir is None else f"served from {layer.local_dir}"
    print(f"layer {layer.name}: external {layer.format} {layer.kind}, {where}")
    return 0


def run_layers_remove(args: argparse.Namespace) -> int:
    from volumes.external_layers import remove_external_layer

    remove_external_layer(Workspace(args.workspace), args.name)
    print(f"layer {args.name}: unregistered")
    return 0


def run_mesh(args: argparse.Namespace) -> int:
    from volumes.meshing import mesh_segmentation

    workspace = Workspace(args.workspace)
    chunk_shape = parse_zyx(args.chunk_shape, "--chunk-shape")
    if min(chunk_shape) < 1:
        raise InputError(f"--chunk-shape must be positive, got {args.chunk_shape!r}")
    count = mesh_segmentation(workspace, args.segmentation, chunk_shape=chunk_shape, mesh_format=args.format,
                              overwrite=args.overwrite, progress=not args.no_progress)
    print(f"{args.format} meshes of {count} supervoxels in layer '{args.segmentation}'")
    return 0
