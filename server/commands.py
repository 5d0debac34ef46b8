"""`connectome serve`; the serving options and the serve loop, which `connectome demo` (demo/commands.py) reuses."""
from __future__ import annotations

import argparse
import threading

from volumes.workspace import Workspace


def register(subparsers, workspace: argparse.ArgumentParser) -> None:
    serve = subparsers.add_parser(
        "serve", parents=[workspace], help="host Neuroglancer viewers (one per user) and the proofreading HTTP API",
        description="Serve a workspace: each user opens /login?token=THEIR_TOKEN and gets their own viewer; "
                    "edits show in every open viewer within a second. The API is described at /api/openapi.json.")
    add_server_arguments(serve)
    serve.set_defaults(func=run_serve)


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
    import logging

    from server.app import ProofreadingServer

    # Background failures (a store poll, a viewer action) go to the module loggers; show warnings on stderr.
    logging.basicConfig(level=logging.WARNING, format="connectome serve: %(levelname)s %(name)s: %(message)s")
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
