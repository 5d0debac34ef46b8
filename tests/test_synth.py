"""The synthetic EM generator: deterministic, and its ground truth agrees with itself."""
from __future__ import annotations

import argparse

import cc3d
import h5py
import numpy as np
import pytest

from volumes.errors import InputError
from volumes.geometry import nm_to_voxel
from volumes.synth import read_cremi_synapses, synthesize, write_cremi

SHAPE = (48, 96, 96)


@pytest.fixture(scope="module")
def volume():
    return synthesize(SHAPE, seed=3)


def run_cli(argv: list[str]) -> int:
    from volumes import synth_commands

    parser = argparse.ArgumentParser(prog="connectome")
    synth_commands.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_same_seed_same_volume_other_seed_other_volume(volume):
    again = synthesize(SHAPE, seed=3)
    for key in ("raw", "neuron_ids", "clefts"):
        assert np.array_equal(volume[key], again[key]), key
    assert np.array_equal(volume["annotations"]["locations_nm"], again["annotations"]["locations_nm"])
    other = synthesize(SHAPE, seed=4)
    assert not np.array_equal(volume["raw"], other["raw"])


def test_labels_are_dense_and_each_id_is_one_connected_piece(volume):
    labels = volume["neuron_ids"]
    assert labels.dtype == np.uint64 and labels.shape == SHAPE
    assert labels.min() >= 1
    ids = np.unique(labels)
    assert len(ids) >= 5
    assert len(np.unique(cc3d.connected_components(labels, connectivity=6))) == len(ids)


def test_every_synapse_point_lies_in_its_recorded_partner(volume):
    annotations = volume["annotations"]
    labels, clefts = volume["neuron_ids"], volume["clefts"]
    resolution = volume["resolution_nm"]
    pairs = annotations["partner_neuron_ids"]
    assert len(pairs) >= 1
    location_of = dict(zip(annotations["ids"].tolist(), annotations["locations_nm"]))
    type_of = dict(zip(annotations["ids"].tolist(), annotations["types"]))
    for k, ((pre_id, post_id), (pre_neuron, post_neuron)) in enumerate(zip(annotations["partners"], pairs)):
        assert type_of[int(pre_id)] == "presynaptic_site" and type_of[int(post_id)] == "postsynaptic_site"
        assert pre_neuron != post_neuron
        pre_voxel = nm_to_voxel(location_of[int(pre_id)], resolution)
        post_voxel = nm_to_voxel(location_of[int(post_id)], resolution)
        assert labels[tuple(pre_voxel)] == pre_neuron
        assert labels[tuple(post_voxel)] == post_neuron
        # The cleft lies on the contact of exactly these two neurons, between the two points.
        cleft_labels = set(np.unique(labels[clefts == k + 1]).tolist())
        assert cleft_labels == {int(pre_neuron), int(post_neuron)}
        center_nm = (np.argwhere(clefts == k + 1).mean(axis=0) + 0.5) * resolution
        assert np.linalg.norm(center_nm - location_of[int(pre_id)]) < 200
        assert np.linalg.norm(center_nm - location_of[int(post_id)]) < 200


def test_image_has_dark_membranes_and_darker_clefts(volume):
    raw = volume["raw"].astype(float)
    labels = volume["neuron_ids"]
    boundary = np.zeros(labels.shape, dtype=bool)
    boundary[:, :, :-1] |= labels[:, :, :-1] != labels[:, :, 1:]
    boundary[:, :, 1:] |= labels[:, :, :-1] != labels[:, :, 1:]
    interior_mean = raw[~boundary & (volume["clefts"] == 0)].mean()
    membrane_mean = raw[boundary & (volume["clefts"] == 0)].mean()
    cleft_mean = raw[volume["clefts"] > 0].mean()
    assert interior_mean - membrane_mean > 40
    assert membrane_mean - cleft_mean > 5
    assert raw.std() > 20  # texture and noise, not flat


def test_anisotropic_resolution():
    volume = synthesize((16, 64, 64), seed=1, resolution_nm=(40, 8, 8))
    assert volume["resolution_nm"] == (40.0, 8.0, 8.0)
    assert volume["raw"].shape == (16, 64, 64)
    assert len(np.unique(volume["neuron_ids"])) >= 3


def test_cremi_file_round_trip(tmp_path, volume):
    path = write_cremi(tmp_path / "synth.h5", volume)
    assert [p.name for p in tmp_path.iterdir()] == ["synth.h5"]  # no temporary left behind
    with h5py.File(path, "r") as f:
        for name in ("volumes/raw", "volumes/labels/neuron_ids", "volumes/labels/clefts"):
            assert tuple(f[name].attrs["resolution"]) == (8.0, 8.0, 8.0)
            assert tuple(f[name].attrs["offset"]) == (0.0, 0.0, 0.0)
        assert np.array_equal(f["volumes/raw"][:], volume["raw"])
        assert f["volumes/raw"].dtype == np.uint8 and f["volumes/labels/neuron_ids"].dtype == np.uint64
        types = [t.decode() if isinstance(t, bytes) else t for t in f["annotations/types"][:]]
        assert set(types) == {"presynaptic_site", "postsynaptic_site"}
    synapses = read_cremi_synapses(path)
    assert np.array_equal(synapses["neuron_ids"], volume["annotations"]["partner_neuron_ids"])
    assert synapses["pre_nm"].shape == synapses["post_nm"].shape == (len(volume["annotations"]["partners"]), 3)


def test_cli_writes_file_and_rejects_bad_shape(tmp_path, capsys):
    out = tmp_path / "cli.h5"
    assert run_cli(["synth", str(out), "--shape", "24,48,48", "--seed", "7"]) == 0
    assert "synapses" in capsys.readouterr().out
    with h5py.File(out, "r") as f:
        assert f["volumes/raw"].shape == (24, 48, 48)
    for bad in ("24,48", "a,b,c", "24,48,2"):
        with pytest.raises(InputError):
            run_cli(["synth", str(tmp_path / "bad.h5"), "--shape", bad])
    assert not (tmp_path / "bad.h5").exists()
