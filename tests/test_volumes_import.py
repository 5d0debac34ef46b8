"""`connectome init` and `connectome import`: real FIB-25 data in, exact precomputed layers out."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cloudvolume import CloudVolume

from cli.main import main
from volumes.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent


def read_layer(workspace: Workspace, name: str, mip: int = 0) -> np.ndarray:
    """Read a whole layer with plain cloud-volume and return it as z, y, x."""
    cv = CloudVolume("file://" + str(workspace.layer_path(name)), mip=mip, progress=False)
    return np.asarray(cv[:, :, :])[..., 0].transpose(2, 1, 0)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_init_creates_the_layout(tmp_path, capsys):
    assert main(["init", str(tmp_path / "w")]) == 0
    assert (tmp_path / "w" / "connectome.toml").is_file()
    assert (tmp_path / "w" / "layers").is_dir()
    assert Workspace(tmp_path / "w").database_url == "sqlite:///" + str((tmp_path / "w" / "connectome.db").resolve())


def test_png_stack_and_hdf5_import_to_identical_volumes(workspace, fib25_h5, fib25_png_dir):
    import h5py

    ws = str(workspace.root)
    assert main(["import", str(fib25_png_dir), "-w", ws, "--name", "png", "--resolution", "10,10,10"]) == 0
    assert main(["import", f"{fib25_h5}:volumes/raw", "-w", ws, "--name", "h5"]) == 0
    from_png, from_h5 = read_layer(workspace, "png"), read_layer(workspace, "h5")
    with h5py.File(fib25_h5, "r") as f:
        original = f["volumes/raw"][:]
    assert from_png.dtype == np.uint8 and from_png.shape == (250, 250, 250)
    np.testing.assert_array_equal(from_png, original)
    np.testing.assert_array_equal(from_h5, original)
    # both infos agree and describe an image pyramid at 10 nm
    for name in ("png", "h5"):
        cv = CloudVolume("file://" + str(workspace.layer_path(name)))
        assert cv.layer_type == "image" and list(cv.resolution) == [10, 10, 10]
        assert len(cv.info["scales"]) >= 3
    # the averaged level is the mean of 2x2x2 blocks
    level1 = read_layer(workspace, "h5", mip=1)
    expected = original[:2, :2, :2].astype(float).mean()
    assert abs(float(level1[0, 0, 0]) - expected) <= 1


def test_labels_import_reads_back_exactly(workspace, fib25_h5):
    import h5py

    assert main(["import", f"{fib25_h5}:volumes/labels/neuron_ids", "-w", str(workspace.root), "--name", "gt", "--labels"]) == 0
    labels = read_layer(workspace, "gt")
    with h5py.File(fib25_h5, "r") as f:
        original = f["volumes/labels/neuron_ids"][:]
    assert labels.dtype == np.uint64
    np.testing.assert_array_equal(labels, original)
    assert len(np.unique(labels)) == 526
    cv = CloudVolume("file://" + str(workspace.layer_path("gt")), mip=1)
    assert cv.layer_type == "segmentation"
    # labels are downsampled by the mode: every value in level 1 is a real id, never an average
    assert set(np.unique(read_layer(workspace, "gt", mip=1))) <= set(np.unique(original))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int32])
def test_small_integer_labels_are_stored_as_uint64(workspace, tmp_path, dtype):
    labels = (np.arange(4 * 5 * 6).reshape(4, 5, 6) % 7).astype(dtype)
    np.save(tmp_path / "l.npy", labels)
    assert main(["import", str(tmp_path / "l.npy"), "-w", str(workspace.root), "--name", "l", "--labels", "--resolution", "4,4,4"]) == 0
    stored = read_layer(workspace, "l")
    assert stored.dtype == np.uint64
    np.testing.assert_array_equal(stored, labels.astype(np.uint64))


def bad_inputs(tmp: Path, ws: str, h5: Path) -> dict[str, tuple[list[str], str]]:
    np.save(tmp / "flat.npy", np.zeros((5, 5), np.uint8))
    np.save(tmp / "deep.npy", np.zeros((2, 3, 3, 3), np.uint8))
    np.save(tmp / "float.npy", np.zeros((3, 3, 3), np.float32))
    return {
        "missing file": (["import", str(tmp / "nope.h5") + ":raw", "-w", ws, "--name", "a"], "no such file"),
        "wrong hdf5 key": (["import", f"{h5}:volumes/raww", "-w", ws, "--name", "a"], "no dataset 'volumes/raww'"),
        "2-D array": (["import", str(tmp / "flat.npy"), "-w", ws, "--name", "a", "--resolution", "1,1,1"], "3-D"),
        "4-D array": (["import", str(tmp / "deep.npy"), "-w", ws, "--name", "a", "--resolution", "1,1,1"], "3-D"),
        "float labels": (["import", str(tmp / "float.npy"), "-w", ws, "--name", "a", "--labels", "--resolution", "1,1,1"], "labels must be integers"),
        "malformed resolution": (["import", str(tmp / "float.npy"), "-w", ws, "--name", "a", "--resolution", "4,4"], "--resolution must be three"),
        "negative resolution": (["import", str(tmp / "float.npy"), "-w", ws, "--name", "a", "--resolution", "4,-4,4"], "must be positive"),
        "no resolution": (["import", str(tmp / "float.npy"), "-w", ws, "--name", "a"], "give it as --resolution"),
        "bad layer name": (["import", str(tmp / "float.npy"), "-w", ws, "--name", "../x", "--resolution", "1,1,1"], "invalid layer name"),
        "not a workspace": (["import", str(tmp / "float.npy"), "-w", str(tmp), "--name", "a"], "not a workspace"),
    }


def test_bad_input_gives_one_line_and_nonzero_exit(workspace, tmp_path, fib25_h5, capsys):
    for case, (argv, message) in bad_inputs(tmp_path, str(workspace.root), fib25_h5).items():
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2, case
        assert message in err, (case, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (case, err)
    assert workspace.layer_names() == []


def test_cli_process_prints_no_traceback(workspace, fib25_h5):
    result = run_cli("import", f"{fib25_h5}:volumes/raww", "-w", str(workspace.root), "--name", "a")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("connectome: error:") and "Traceback" not in result.stderr


def test_existing_layer_needs_overwrite(workspace, tmp_path, capsys):
    first = np.ones((3, 4, 5), np.uint8)
    np.save(tmp_path / "a.npy", first)
    np.save(tmp_path / "b.npy", first * 7)
    base = ["-w", str(workspace.root), "--name", "img", "--resolution", "1,1,1"]
    assert main(["import", str(tmp_path / "a.npy"), *base]) == 0
    assert main(["import", str(tmp_path / "b.npy"), *base]) == 2
    assert "--overwrite" in capsys.readouterr().err
    np.testing.assert_array_equal(read_layer(workspace, "img"), first)
    assert main(["import", str(tmp_path / "b.npy"), *base, "--overwrite"]) == 0
    np.testing.assert_array_equal(read_layer(workspace, "img"), first * 7)


def test_failure_part_way_leaves_nothing(workspace, tmp_path, capsys):
    """A corrupt section in the middle of a stack: the import fails and no layer, partial or staged, remains."""
    from PIL import Image

    stack = tmp_path / "stack"
    stack.mkdir()
    for z in range(140):  # three 64-deep slabs: the first is written before the corrupt section is read
        Image.fromarray(np.full((8, 8), z, np.uint8)).save(stack / f"{z:03d}.png")
    (stack / "130.png").write_bytes(b"not a png")
    assert main(["import", str(stack), "-w", str(workspace.root), "--name", "s", "--resolution", "1,1,1"]) == 2
    assert "130.png" in capsys.readouterr().err
    assert list(workspace.layers_dir.iterdir()) == []


def test_write_failure_part_way_keeps_the_old_layer(workspace, tmp_path, monkeypatch, capsys):
    """A disk-full error while writing a replacement leaves the previous layer untouched."""
    from cloudvolume.frontends.precomputed import CloudVolumePrecomputed as CV

    np.save(tmp_path / "old.npy", np.full((130, 8, 8), 3, np.uint8))
    np.save(tmp_path / "new.npy", np.full((130, 8, 8), 9, np.uint8))
    base = ["-w", str(workspace.root), "--name", "img", "--resolution", "1,1,1"]
    assert main(["import", str(tmp_path / "old.npy"), *base]) == 0
    calls = {"n": 0}
    original_setitem = CV.__setitem__

    def failing_setitem(self, slices, data):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(28, "No space left on device")
        return original_setitem(self, slices, data)

    monkeypatch.setattr(CV, "__setitem__", failing_setitem)
    assert main(["import", str(tmp_path / "new.npy"), *base, "--overwrite"]) == 1
    assert "No space left on device" in capsys.readouterr().err
    monkeypatch.undo()
    assert [p.name for p in workspace.layers_dir.iterdir()] == ["img"]
    np.testing.assert_array_equal(read_layer(workspace, "img"), np.full((130, 8, 8), 3, np.uint8))


PYRAMID_SHAPE = (24, 160, 144)  # over one 128-voxel chunk in y and x, so the pyramid has a second level


def _write_source(tmp_path: Path, kind: str, volume: np.ndarray) -> str:
    """`volume` written as one input format the importer reads; returns the SRC argument."""
    if kind == "npy":
        np.save(tmp_path / "v.npy", volume)  # opened as a read-only memmap
        return str(tmp_path / "v.npy")
    if kind == "npz":
        np.savez(tmp_path / "v.npz", data=volume)
        return f"{tmp_path / 'v.npz'}:data"
    if kind == "h5":
        import h5py

        with h5py.File(tmp_path / "v.h5", "w") as f:
            f.create_dataset("volumes/data", data=volume, chunks=(8, 32, 32))
        return f"{tmp_path / 'v.h5'}:volumes/data"
    if kind in ("png", "tiff"):
        from PIL import Image

        folder = tmp_path / kind
        folder.mkdir()
        for z, section in enumerate(volume):
            Image.fromarray(section).save(folder / f"{z}.{'png' if kind == 'png' else 'tif'}")
        return str(folder)
    if kind == "zarr":
        import zarr

        array = zarr.create_array(str(tmp_path / "v.zarr"), shape=volume.shape, dtype=volume.dtype, chunks=(8, 64, 64))
        array[:] = volume
        return str(tmp_path / "v.zarr")
    if kind == "n5":
        import tensorstore as ts

        spec = {"driver": "n5", "kvstore": {"driver": "file", "path": str(tmp_path / "v.n5" / "data")},
                "metadata": {"dimensions": list(reversed(volume.shape)), "blockSize": [64, 64, 8],
                             "dataType": str(volume.dtype), "compression": {"type": "gzip"}}, "create": True}
        ts.open(spec).result().write(volume.transpose(2, 1, 0)).result()
        return f"{tmp_path / 'v.n5'}:data"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["npy", "npz", "h5", "png", "tiff", "zarr", "n5"])
def test_every_format_imports_at_two_pyramid_levels(workspace, tmp_path, kind):
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, PYRAMID_SHAPE, dtype=np.uint8)
    source = _write_source(tmp_path, kind, image)
    assert main(["import", source, "-w", str(workspace.root), "--name", "img", "--resolution", "8,8,8"]) == 0
    cv = CloudVolume("file://" + str(workspace.layer_path("img")))
    assert len(cv.info["scales"]) >= 2, cv.info["scales"]
    np.testing.assert_array_equal(read_layer(workspace, "img"), image)
    from volumes.precomputed import pyramid_factors

    factor = pyramid_factors(PYRAMID_SHAPE, (8, 8, 8))[0]  # z is too thin to halve here: (1, 2, 2)
    level1 = read_layer(workspace, "img", mip=1)
    assert level1.shape == tuple(-(-s // f) for s, f in zip(PYRAMID_SHAPE, factor))
    first_block = image[:factor[0], :factor[1], :factor[2]].astype(float)
    assert abs(float(level1[0, 0, 0]) - first_block.mean()) <= 1
    if kind in ("npy", "h5", "zarr"):  # labels too, through the same formats
        labels = (rng.integers(0, 5, PYRAMID_SHAPE) * 1000).astype(np.uint32)
        label_dir = tmp_path / "labels"
        label_dir.mkdir()
        source = _write_source(label_dir, kind, labels)
        assert main(["import", source, "-w", str(workspace.root), "--name", "seg", "--labels", "--resolution", "8,8,8"]) == 0
        np.testing.assert_array_equal(read_layer(workspace, "seg"), labels)
        assert len(CloudVolume("file://" + str(workspace.layer_path("seg"))).info["scales"]) >= 2
