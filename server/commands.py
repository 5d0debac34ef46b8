"""`connectome serve`, `connectome mesh` and `connectome demo`."""
from __future__ import annotations

import argparse
import threading

from cli.main import add_workspace_argument
from volumes.workspace import Workspace


def register(subparsers) -> None:
    serve = subparsers.add_parser(
        "serve", help="host Neuroglancer viewers (one per user) and the proofreading HTTP API",
        description="Serve a workspace: each user opens /login?token=THEIR_TOKEN and gets their own viewer; "
                    "edits show in every open viewer within a second. The API is described at /api/openapi.json.")
    add_workspace_argument(serve)
    add_server_arguments(serve)
    serve.set_defaults(func=run_serve)

    mesh = subparsers.add_parser("mesh", help="mesh every supervoxel of a segmentation layer (Neuroglancer legacy meshes)")
    add_workspace_argument(mesh)
    mesh.add_argument("--segmentation", default="segmentation", help="segmentation layer name (default: segmentation)")
    mesh.add_argument("--overwrite", action="store_true", help="re-mesh even if meshes exist")
    mesh.add_argument("--no-progress", action="store_true", help="no progress bar")
    mesh.set_defaults(func=run_mesh)

    demo = subparsers.add_parser(
        "demo", help="build a demo workspace end to end (import, FFN, meshes, graph, synapses, users) and serve it",
        description="The demo segments a 64^3 box of the FIB-25 cube with Google's FFN checkpoint, read from --data DIR "
                    "(the published files) or else downloaded once into a cache (~20 MB; $CONNECTOME_CACHE, default "
                    "~/.cache/connectome); offline, a synthetic volume with small shipped models. Finished steps are reused.")
    demo.add_argument("--data", help="directory with fib25-training2/ and ffn-fib25-google/ as published")
    demo.add_argument("--offline", action="store_true", help="do not try to download FIB-25; without --data, use the synthetic volume")
    demo.add_argument("--workspace", "-w", default="./demo-workspace", help="workspace to build (default ./demo-workspace)")
    demo.add_argument("--bbox", help="z0,y0,x0,z1,y1,x1 box to segment (default for FIB-25: 93,93,93,157,157,157)")
    demo.add_argument("--no-serve", action="store_true", help="build the workspace and stop")
    add_server_arguments(demo)
    demo.set_defaults(func=run_demo)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default from connectome.toml: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=port_number, help="port, 1-65535 (default from connectome.toml: 8080; 0 picks a free one)")
    parser.add_argument("--image", help="image layer to show (default: 'image' or the first image layer)")
    parser.add_argument("--segmentation-layer", dest="segmentation_layer", help="segmentation layer to show and edit")


def port_number(text: str) -> int:
    """A TCP port for argparse: 0 (any free port) to 65535, in ASCII digits."""
    from volumes.errors import InputError
    from volumes.ids import parse_int

    try:
        return parse_int(text, "--port", minimum=0, maximum=65535)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_serve(args: argparse.Namespace) -> int:
    workspace = Workspace(args.workspace)
    serve_until_interrupted(workspace, args, logins={})
    return 0


def serve_until_interrupted(workspace: Workspace, args: argparse.Namespace, logins: dict[str, str]) -> None:
    from server.app import ProofreadingServer

    host = args.host or workspace.server_host
    port = workspace.server_port if args.port is None else args.port
    with ProofreadingServer(workspace, host=host, port=port, image_layer=args.image,
                            segmentation_layer=args.segmentation_layer) as server:
        print(f"connectome serve: {workspace.root} at {server.url}/ (image '{server.layers.image}', "
              f"segmentation '{server.layers.segmentation}')", flush=True)
        for name, token in logins.items():
            print(f"  open as {name}: {server.url}/login?token={token}", flush=True)
        if not logins:
            print("  each user opens <url>/login?token=THEIR_TOKEN (tokens come from 'connectome user add')", flush=True)
        print("  API: " + server.url + "/api/openapi.json ; press Ctrl+C to stop", flush=True)
        threading.Event().wait()


def run_mesh(args: argparse.Namespace) -> int:
    from volumes.meshing import mesh_segmentation

    workspace = Workspace(args.workspace)
    count = mesh_segmentation(workspace, args.segmentation, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"meshes of {count} supervoxels in layer '{args.segmentation}'")
    return 0


def require_free_port(host: str, port: int) -> None:
    """Refuse a port another program listens on now, before minutes of building (0 always finds one)."""
    import socket

    from volumes.errors import InputError

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port} ({exc.strerror}); the demo would be built for nothing: "
                             "choose another --port (0 picks a free one)") from None


def run_demo(args: argparse.Namespace) -> int:
    from server.demo import build_demo, demo_logins

    if not args.no_serve:  # a new workspace will get connectome.toml's defaults
        from pathlib import Path

        from volumes.workspace import CONFIG_NAME, default_config

        if (Path(args.workspace) / CONFIG_NAME).is_file():
            existing = Workspace(args.workspace)
            host, port = args.host or existing.server_host, existing.server_port if args.port is None else args.port
        else:
            server_defaults = default_config()["server"]
            host = args.host or server_defaults["host"]
            port = server_defaults["port"] if args.port is None else args.port
        require_free_port(host, port)
        print(f"connectome demo: port {port} on {host} is free; the viewer will be served there once built", flush=True)
    workspace = build_demo(args.workspace, data_dir=args.data, bbox=args.bbox, download=not args.offline)
    if args.no_serve:
        print(f"connectome demo: workspace ready at {workspace.root}; serve it with 'connectome serve -w {workspace.root}'")
        return 0
    serve_until_interrupted(workspace, args, logins=demo_logins(workspace))
    return 0
