"""Any pixel size to a model's working resolution: the working image, and where things lie in nm, do not depend
on the pixel size the image came at (whole factors average blocks, other ratios resample with anti-aliasing)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from synapses.data import Region, working_scale
from volumes.errors import RefusedError
from volumes.io import ArrayVolume

WORKING_NM = (40.0, 8.0, 8.0)
EXTENT_NM = (1600.0, 1280.0, 1280.0)
BLOBS_NM = [(400.0, 320.0, 400.0), (1000.0, 800.0, 560.0), (1240.0, 480.0, 960.0)]
BLOB_SIGMA_NM = (60.0, 40.0, 40.0)


def render(resolution_nm) -> np.ndarray:
    """Bright Gaussian blobs at BLOBS_NM on a dark background, sampled at voxel centres of `resolution_nm`."""
    shape = [int(round(e / r)) for e, r in zip(EXTENT_NM, resolution_nm)]
    grids = np.meshgrid(*[(np.arange(n) + 0.5) * r for n, r in zip(shape, resolution_nm)], indexing="ij", sparse=True)
    image = np.zeros(shape)
    for blob in BLOBS_NM:
        image += np.exp(-sum((g - c) ** 2 / (2 * s ** 2) for g, c, s in zip(grids, blob, BLOB_SIGMA_NM)))
    return np.clip(np.rint(30 + 200 * image), 0, 255).astype(np.uint8)


def blob_centres_nm(region: Region) -> np.ndarray:
    working = region.read_working()
    labels, count = ndimage.label(working > 120)
    assert count == len(BLOBS_NM)
    centres = ndimage.center_of_mass(working - 30, labels, range(1, count + 1))
    return np.array(sorted(region.working_voxel_to_nm(np.asarray(centre)).tolist() for centre in centres))


@pytest.mark.parametrize("resolution_nm", [(40.0, 4.0, 4.0), (50.0, 6.4, 6.4), (20.0, 10.0, 5.0), (40.0, 11.0, 11.0)],
                         ids=["whole factors", "ssTEM-like 1.25x", "anisotropic", "coarser than the model"])
def test_working_image_and_positions_do_not_depend_on_the_pixel_size(resolution_nm):
    native = Region(ArrayVolume("native", render(WORKING_NM), WORKING_NM), (0, int(EXTENT_NM[0] / WORKING_NM[0])),
                    (1.0, 1.0, 1.0))
    source = render(resolution_nm)
    region = Region(ArrayVolume("other", source, resolution_nm), (0, source.shape[0]),
                    working_scale(resolution_nm, WORKING_NM))
    assert np.allclose(region.working_resolution_nm, WORKING_NM)
    shape = tuple(min(a, b) for a, b in zip(native.working_shape, region.working_shape))
    ours = region.read_working()[tuple(slice(0, s) for s in shape)]
    reference = native.read_working()[tuple(slice(0, s) for s in shape)]
    assert np.corrcoef(ours.ravel(), reference.ravel())[0, 1] > 0.97
    # blob centres in nm agree within half a working voxel on every axis
    assert np.all(np.abs(blob_centres_nm(region) - blob_centres_nm(native)) <= np.asarray(WORKING_NM) / 2)


def test_whole_factors_average_blocks_exactly_as_before():
    source = render((40.0, 4.0, 4.0))
    region = Region(ArrayVolume("x", source, (40.0, 4.0, 4.0)), (0, source.shape[0]), working_scale((40, 4, 4), WORKING_NM))
    assert region.factors == (1, 2, 2)
    expected = source.reshape(source.shape[0], source.shape[1] // 2, 2, source.shape[2] // 2, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(region.read_working(), expected, rtol=1e-6)


def test_a_block_reads_what_the_whole_reads():
    source = render((50.0, 6.4, 6.4))
    region = Region(ArrayVolume("x", source, (50.0, 6.4, 6.4)), (0, source.shape[0]), working_scale((50, 6.4, 6.4), WORKING_NM))
    from volumes.geometry import Box

    whole = region.read_working()
    box = Box((10, 40, 70), (30, 100, 140))
    np.testing.assert_allclose(region.read_working(box), whole[box.slices()], atol=1e-3)


def test_masks_keep_thin_structures_when_shrunk():
    mask = np.zeros((10, 200, 200), bool)
    mask[:, 100, :] = True  # a one-voxel-thin cleft
    region = Region(ArrayVolume("m", mask, (40.0, 3.0, 3.0)), (0, 10), working_scale((40, 3, 3), WORKING_NM))
    working = region.mask_to_working(mask)
    assert working.shape == region.working_shape and working[:, :, 5:-5].any(axis=1).all()


def test_ratios_beyond_eight_either_way_are_refused():
    with pytest.raises(RefusedError, match="beyond the 8x either way"):
        working_scale((4.0, 0.5, 0.5), WORKING_NM)
    with pytest.raises(RefusedError, match="beyond the 8x either way"):
        working_scale((400.0, 8.0, 8.0), WORKING_NM)
