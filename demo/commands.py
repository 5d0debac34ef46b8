"""`connectome demo`: build a demo workspace end to end and serve it."""
from __future__ import annotations

import argparse
from pathlib import Path

from server.commands import add_server_arguments, serve_until_interrupted
from volumes.errors import InputError
from volumes.workspace import CONFIG_NAME, Workspace, default_config


def register(subparsers) -> None:
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


def require_free_port(host: str, port: int) -> None:
    """Refuse a port another program listens on now, before minutes of building (0 always finds one)."""
    import socket

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
    from demo.build import build_demo, demo_logins

    if not args.no_serve:  # a new workspace will get connectome.toml's defaults
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
