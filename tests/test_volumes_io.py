"""Volume I/O: every format opens lazily, reads boxes in z, y, x, and honours voxel sizes."""
from __future__ import annotations

import numpy as np
import pytest

from volumes.errors import InputError
from volumes.geometry import Box
from volumes.io import open_volume
from volumes.precomputed import write_layer


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    """A non-symmetric z, y, x array so any axis swap shows."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(7, 11, 13), dtype=np.uint8)


BOX = Box((1, 2, 3), (6, 9, 12))


def check(volume, sample, resolution=None):
    assert volume.shape == sample.shape
    assert volume.dtype == sample.dtype
    np.testing.assert_array_equal(volume.read(), sample)
    np.testing.assert_array_equal(volume.read(BOX), sample[BOX.slices()])
    if resolution is not None:
        assert volume.resolution_nm == resolution


def test_hdf5_with_cremi_attributes(tmp_path, sample):
    import h5py

    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("volumes/raw", data=sample)
        ds.attrs["resolution"] = (40.0, 4.0, 4.0)
        ds.attrs["offset"] = (80.0, 8.0, 12.0)
    volume = open_volume(f"{path}:volumes/raw")
    check(volume, sample, (40.0, 4.0, 4.0))
    assert volume.voxel_offset == (2, 2, 3)
    # nanometre boxes are relative to the physical origin, offset included
    np.testing.assert_array_equal(volume.read_nm((80 + 40, 8 + 8, 12 + 12), (80 + 200, 8 + 36, 12 + 48)), sample[1:5, 2:9, 3:12])


def test_png_and_tiff_stacks_in_natural_order(tmp_path, sample):
    import tifffile
    from PIL import Image

    (tmp_path / "png").mkdir()
    (tmp_path / "tif").mkdir()
    for z in range(sample.shape[0]):
        Image.fromarray(sample[z]).save(tmp_path / "png" / f"s{z}.png")  # s10 after s9 only in natural order
        tifffile.imwrite(tmp_path / "tif" / f"sec_{z}.tif", sample[z])
    check(open_volume(tmp_path / "png", resolution_nm=(10, 5, 5)), sample, (10.0, 5.0, 5.0))
    check(open_volume(str(tmp_path / "tif" / "*.tif")), sample)


def test_natural_sort_puts_10_after_9(tmp_path):
    from PIL import Image

    for z in range(12):
        Image.fromarray(np.full((4, 4), z, np.uint8)).save(tmp_path / f"{z}.png")
    volume = open_volume(tmp_path)
    assert [int(volume.read(Box((z, 0, 0), (z + 1, 1, 1)))[0, 0, 0]) for z in range(12)] == list(range(12))


def test_zarr_and_n5(tmp_path, sample):
    import tensorstore as ts
    import zarr

    array = zarr.create_array(str(tmp_path / "v.zarr"), shape=sample.shape, dtype=sample.dtype, chunks=(4, 4, 4))
    array[:] = sample
    array.attrs["resolution"] = [8, 8, 8]
    check(open_volume(tmp_path / "v.zarr"), sample, (8.0, 8.0, 8.0))

    spec = {"driver": "n5", "kvstore": {"driver": "file", "path": str(tmp_path / "v.n5" / "raw")},
            "metadata": {"dimensions": list(reversed(sample.shape)), "blockSize": [4, 4, 4], "dataType": "uint8",
                         "compression": {"type": "gzip"}}, "create": True}
    store = ts.open(spec).result()
    store.write(sample.transpose(2, 1, 0)).result()
    check(open_volume(f"{tmp_path / 'v.n5'}:raw"), sample)


def test_npy_and_npz(tmp_path, sample):
    np.save(tmp_path / "v.npy", sample)
    np.savez(tmp_path / "v.npz", seg=sample)
    check(open_volume(tmp_path / "v.npy"), sample)
    check(open_volume(f"{tmp_path / 'v.npz'}:seg"), sample)


def test_precomputed_through_cloudvolume(tmp_path, sample):
    write_layer(tmp_path / "layer", sample, (30, 6, 6), layer_type="image", voxel_offset=(1, 2, 3), progress=False)
    volume = open_volume("precomputed://file://" + str(tmp_path / "layer"))
    check(volume, sample, (30.0, 6.0, 6.0))
    assert volume.voxel_offset == (1, 2, 3)
    # a plain directory holding an info file is recognised too
    check(open_volume(tmp_path / "layer"), sample)


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.h5:raw", "no such file"),
    (lambda p: str(p / "2d.npy"), "3-D"),
    (lambda p: str(p / "4d.npy"), "3-D"),
    (lambda p: f"{p / 'v.h5'}:volumes/nothing", "no dataset 'volumes/nothing'"),
    (lambda p: str(p / "v.h5"), "name the dataset"),
    (lambda p: f"{p / 'v.npz'}:nothing", "no array 'nothing'"),
    (lambda p: str(p / "empty"), "no PNG or TIFF"),
])
def test_bad_sources_give_one_line_errors(tmp_path, make, message):
    import h5py

    np.save(tmp_path / "2d.npy", np.zeros((4, 4), np.uint8))
    np.save(tmp_path / "4d.npy", np.zeros((2, 4, 4, 4), np.uint8))
    np.savez(tmp_path / "v.npz", a=np.zeros((2, 2, 2)))
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("volumes/raw", data=np.zeros((2, 2, 2), np.uint8))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=message) as info:
        open_volume(make(tmp_path))
    assert "\n" not in str(info.value)


def test_box_outside_volume_is_refused(sample, tmp_path):
    np.save(tmp_path / "v.npy", sample)
    with pytest.raises(InputError, match="outside the volume"):
        open_volume(tmp_path / "v.npy").read(Box((0, 0, 0), (8, 1, 1)))


def test_one_bit_sections_read_as_black_and_white(tmp_path):
    """Mask stacks mix 1-bit and 8-bit PNGs; 1-bit sections read as 0/255 like PIL's own conversion."""
    from PIL import Image

    mask = np.zeros((6, 6), bool)
    mask[2:4, 1:5] = True
    Image.fromarray(mask).convert("1").save(tmp_path / "0.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "1.png")
    volume = open_volume(tmp_path)
    data = volume.read()
    assert volume.dtype == np.uint8
    np.testing.assert_array_equal(data[0], data[1])
    assert set(np.unique(data)) == {0, 255}


def _mask() -> np.ndarray:
    mask = np.zeros((8, 10), bool)
    mask[2:5, 3:9] = True
    return mask


def test_a_palette_png_whose_index_0_is_white_reads_by_its_colours(tmp_path):
    """The case from the field: a binary mask saved with index 0 = white, 1 = black reads white where it is 0."""
    from PIL import Image

    mask = _mask()  # True where the mask is black (drawn), i.e. palette index 1
    section = Image.fromarray(mask.astype(np.uint8), mode="P")
    section.putpalette([255, 255, 255, 0, 0, 0])
    section.save(tmp_path / "0.png")
    data = open_volume(tmp_path).read()[0]
    np.testing.assert_array_equal(data, np.where(mask, 0, 255))
    assert (data > 0).mean() == pytest.approx(1 - mask.mean())  # the white background, not the index, is 255


def test_a_colour_palette_is_a_label_table(tmp_path):
    from PIL import Image

    labels = np.zeros((8, 10), np.uint8)
    labels[1:4, 1:4], labels[5:7, 2:9] = 1, 2
    section = Image.fromarray(labels, mode="P")
    section.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    section.save(tmp_path / "0.png")
    np.testing.assert_array_equal(open_volume(tmp_path).read()[0], labels)


def test_16_bit_and_grey_rgb_sections_read_as_grey(tmp_path):
    import tifffile
    from PIL import Image

    grey = (np.arange(80).reshape(8, 10) * 800).astype(np.uint16)
    for name in ("png", "tif"):
        (tmp_path / name).mkdir()
    Image.fromarray(grey).save(tmp_path / "png" / "0.png")
    tifffile.imwrite(tmp_path / "tif" / "0.tif", grey)
    for name in ("png", "tif"):
        read = open_volume(tmp_path / name).read()[0]
        assert read.dtype == np.uint16
        np.testing.assert_array_equal(read, grey)
    eight = (grey // 256).astype(np.uint8)
    rgb = np.repeat(eight[..., None], 3, axis=2)
    (tmp_path / "rgb").mkdir()
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "rgb" / "0.png")
    tifffile.imwrite(tmp_path / "rgb" / "1.tif", rgb, photometric="rgb")
    data = open_volume(tmp_path / "rgb").read()
    np.testing.assert_array_equal(data[0], eight)
    np.testing.assert_array_equal(data[1], eight)


def test_colour_sections_are_refused_with_one_line(tmp_path):
    from PIL import Image

    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "0.png")
    with pytest.raises(InputError, match="colour image"):
        open_volume(tmp_path).read()


def test_palette_and_one_bit_tiffs(tmp_path):
    import tifffile
    from PIL import Image

    mask = _mask()
    palette = Image.fromarray(mask.astype(np.uint8), mode="P")
    palette.putpalette([255, 255, 255, 0, 0, 0])
    (tmp_path / "p").mkdir()
    palette.save(tmp_path / "p" / "0.tif")
    with tifffile.TiffFile(tmp_path / "p" / "0.tif") as handle:
        assert handle.pages[0].photometric == tifffile.PHOTOMETRIC.PALETTE  # really a palette TIFF
    np.testing.assert_array_equal(open_volume(tmp_path / "p").read()[0], np.where(mask, 0, 255))
    (tmp_path / "b").mkdir()
    Image.fromarray(mask).convert("1").save(tmp_path / "b" / "0.tif")
    np.testing.assert_array_equal(open_volume(tmp_path / "b").read()[0], np.where(mask, 255, 0))
