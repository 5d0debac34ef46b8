"""The demo's default dataset, fetched from where it is published into a local cache.

FIB-25 `training_sample2` (Takemura et al. 2015; janelia-flyem/neuroproof_examples, one PNG
per z slice) and Google's FFN checkpoint, inference settings and published segmentation of
that cube (google/ffn), laid out as `connectome demo --data` expects:

    CACHE/fib25-training2/fib25_training2.h5      volumes/raw, built from the PNG stack
    CACHE/ffn-fib25-google/models/fib25/...       the TensorFlow checkpoint
    CACHE/ffn-fib25-google/configs/...            the inference pbtxt
    CACHE/ffn-fib25-google/results/fib25/...      the published segmentation

About 20 MB. Each file is written under a temporary name and renamed when complete, so an
interrupted download resumes where it stopped and never leaves a half file behind.
"""
from __future__ import annotations

import io
import os
import urllib.error
import urllib.request
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from volumes.atomic import atomic_path
from volumes.errors import RefusedError

GOOGLE_FFN_URL = "https://raw.githubusercontent.com/google/ffn/master/"
NEUROPROOF_URL = "https://raw.githubusercontent.com/janelia-flyem/neuroproof_examples/master/training_sample2/"
GOOGLE_FILES = ("models/fib25/model.ckpt-27465036.index", "models/fib25/model.ckpt-27465036.data-00000-of-00001",
                "configs/inference_training_sample2.pbtxt", "results/fib25/sample-training2.npz")
SLICES = range(2600, 2850)  # grayscale_maps/iso.<z>.png, 250 slices of 250 x 250 voxels
RESOLUTION_NM = (10.0, 10.0, 10.0)
IMAGE_FILE = Path("fib25-training2") / "fib25_training2.h5"
TIMEOUT_S = 15.0


def default_cache() -> Path:
    """$CONNECTOME_CACHE/fib25, else ~/.cache/connectome/fib25."""
    base = os.environ.get("CONNECTOME_CACHE") or Path.home() / ".cache" / "connectome"
    return Path(base) / "fib25"


def is_complete(cache: Path) -> bool:
    return (cache / IMAGE_FILE).is_file() and all((cache / "ffn-fib25-google" / name).is_file() for name in GOOGLE_FILES)


def fetch_fib25(cache: Path, google_url: str | None = None, neuroproof_url: str | None = None,
                progress: bool = True) -> Path:
    """Download what the cache lacks and build the image volume; returns the cache directory.

    The sources default to GOOGLE_FFN_URL and NEUROPROOF_URL (a mirror laid out the same way
    may stand in). RefusedError (one line) when a source cannot be reached: the caller decides
    what to do without the data.
    """
    google_url, neuroproof_url = google_url or GOOGLE_FFN_URL, neuroproof_url or NEUROPROOF_URL
    wanted = [(google_url + name, cache / "ffn-fib25-google" / name) for name in GOOGLE_FILES]
    slices_dir = cache / "fib25-training2" / "grayscale_maps"
    if not (cache / IMAGE_FILE).is_file():
        wanted += [(f"{neuroproof_url}grayscale_maps/iso.{z}.png", slices_dir / f"iso.{z}.png") for z in SLICES]
    missing = [(url, path) for url, path in wanted if not path.is_file()]
    for url, path in tqdm(missing, desc="downloading FIB-25", unit="file", disable=not progress or not missing):
        _download(url, path)
    if not (cache / IMAGE_FILE).is_file():
        _write_image(slices_dir, cache / IMAGE_FILE)
    return cache


def _download(url: str, path: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as answer:
            data = answer.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise RefusedError(f"cannot download {url} ({reason})") from None
    with atomic_path(path) as partial:
        partial.write_bytes(data)


def _write_image(slices_dir: Path, out: Path) -> None:
    """The PNG stack as a CREMI-style HDF5 `volumes/raw` (z, y, x uint8, 10 nm voxels)."""
    from PIL import Image

    planes = [np.asarray(Image.open(io.BytesIO((slices_dir / f"iso.{z}.png").read_bytes())).convert("L")) for z in SLICES]
    with atomic_path(out) as partial, h5py.File(partial, "w") as f:
        raw = f.create_dataset("volumes/raw", data=np.stack(planes), chunks=(64, 64, 64), compression="gzip")
        raw.attrs["resolution"] = RESOLUTION_NM
        raw.attrs["offset"] = (0, 0, 0)
