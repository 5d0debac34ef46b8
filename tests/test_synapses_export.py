"""The contact-sphere layer reads back through the neuroglancer package's own annotation reader."""
from __future__ import annotations

import numpy as np
import pytest

from synapses.detection import Site
from synapses.export import store_rows, write_annotation_layer


def read_layer(path):
    from neuroglancer.read_precomputed_annotations import AnnotationReader

    return AnnotationReader("file://" + str(path))


def sites() -> list[Site]:
    made = []
    for k, (position, pre, post) in enumerate([((100, 200, 300), 11, 12), ((500, 600, 700), 12, 13), ((900, 100, 50), 11, 13)]):
        site = Site(np.array(position, dtype=float), size=20 + k, score=0.5 + 0.1 * k)
        site.pre_segment, site.post_segment = pre, post
        made.append(site)
    return made


def test_layer_round_trip_with_relationships(tmp_path):
    path = write_annotation_layer(tmp_path / "seg_synapses", sites(), (10, 10, 10), extent_nm=(1000, 1000, 1000))
    reader = read_layer(path)
    assert reader.annotation_type == "ellipsoid"
    assert [p.id for p in reader.properties] == ["score", "size"]
    first = reader.by_id[1]
    assert np.allclose(first.center, (300, 200, 100))  # x, y, z
    assert first.radii[0] >= 30
    assert first.props[0] == pytest.approx(0.5) and first.props[1] == 20
    assert list(first.segments[0]) == [11] and list(first.segments[1]) == [12]
    # Selecting segment 11 finds the synapses it is presynaptic in; segment 13 those it receives.
    assert sorted(int(a.id) for a in reader.relationships["pre_segment"][11]) == [1, 3]
    assert sorted(int(a.id) for a in reader.relationships["post_segment"][13]) == [2, 3]
    assert all(reader.lower_bound[i] <= 50 - 30 for i in range(1)) and reader.upper_bound[0] >= 1000


def test_zero_sites_is_a_valid_layer_and_rewriting_replaces(tmp_path):
    path = write_annotation_layer(tmp_path / "empty", [], (10, 10, 10), extent_nm=(100, 200, 300))
    reader = read_layer(path)
    assert reader.metadata["spatial"][0]["limit"] == 1
    assert len(reader.spatial[0][(0, 0, 0)]) == 0
    assert tuple(reader.upper_bound) == (300, 200, 100)
    write_annotation_layer(path, sites()[:1], (10, 10, 10), extent_nm=(1000, 1000, 1000))
    assert read_layer(path).by_id[1].props[1] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no temporary or retired copies left


def test_store_rows_carry_positions_ids_score_and_size():
    rows = store_rows(sites())
    assert rows[0]["position_nm"] == [100.0, 200.0, 300.0]
    assert (rows[1]["pre_supervoxel_id"], rows[1]["post_supervoxel_id"]) == (12, 13)
    assert rows[2]["size"] == 22 and rows[2]["score"] == pytest.approx(0.7)
