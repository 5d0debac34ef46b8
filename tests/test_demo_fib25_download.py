"""The demo's FIB-25 download: from a local mirror of the published files, resumable; offline falls back."""
from __future__ import annotations

import functools
import http.server
import threading

import h5py
import numpy as np
import pytest

from demo import fib25_download
from demo.build import plan_demo
from volumes.errors import RefusedError
from volumes.workspace import Workspace


@pytest.fixture
def mirror(shared_data):
    """An HTTP server on 127.0.0.1 serving ../shared/data, which holds the published files as published."""
    requested: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            requested.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(shared_data)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield {"google_url": f"{base}/ffn-fib25-google/", "neuroproof_url": f"{base}/fib25-training2/"}, requested
    finally:
        server.shutdown()


def test_download_builds_the_cache_laid_out_as_data_and_resumes(tmp_path, mirror, shared_data, fib25_h5):
    urls, requested = mirror
    cache = fib25_download.fetch_fib25(tmp_path / "cache", progress=False, **urls)
    assert fib25_download.is_complete(cache) and len(requested) == 4 + 250
    with h5py.File(cache / fib25_download.IMAGE_FILE) as built, h5py.File(fib25_h5) as published:
        assert np.array_equal(built["volumes/raw"][:], published["volumes/raw"][:])  # the PNG stack, z by z
        assert tuple(built["volumes/raw"].attrs["resolution"]) == (10.0, 10.0, 10.0)
    for name in fib25_download.GOOGLE_FILES:
        assert (cache / "ffn-fib25-google" / name).read_bytes() == (shared_data / "ffn-fib25-google" / name).read_bytes()

    requested.clear()
    (cache / "ffn-fib25-google" / fib25_download.GOOGLE_FILES[2]).unlink()  # as if interrupted before that file
    fib25_download.fetch_fib25(cache, progress=False, **urls)
    assert requested == [f"/ffn-fib25-google/{fib25_download.GOOGLE_FILES[2]}"]
    assert not list(cache.rglob("*.part"))
    plan = plan_demo(str(cache), Workspace.init(tmp_path / "ws"), None)
    assert plan.checkpoint is not None and "Google's FFN checkpoint" in plan.description


def test_unreachable_sources_give_a_one_line_refusal_and_the_demo_falls_back(tmp_path, monkeypatch, capsys):
    with pytest.raises(RefusedError, match=r"cannot download http://127\.0\.0\.1:9/") as caught:
        fib25_download.fetch_fib25(tmp_path / "cache", google_url="http://127.0.0.1:9/", progress=False)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "cache" / "ffn-fib25-google").exists()

    monkeypatch.setenv("CONNECTOME_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fib25_download, "GOOGLE_FFN_URL", "http://127.0.0.1:9/")
    plan = plan_demo(None, Workspace.init(tmp_path / "ws"), None)
    assert plan.checkpoint is None and "synthetic" in plan.description
    assert "not available offline" in capsys.readouterr().out


def test_a_demo_workspace_is_not_resumed_from_other_data(tmp_path):
    from demo.build import _remember_source
    from volumes.errors import InputError

    workspace = Workspace.init(tmp_path / "ws")
    _remember_source(workspace, "synthetic")
    _remember_source(workspace, "synthetic")  # a re-run from the same data resumes
    with pytest.raises(InputError, match="holds a synthetic demo; build the FIB-25 one with another --workspace"):
        _remember_source(workspace, "FIB-25")
