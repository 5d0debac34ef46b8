"""Open an image or label volume from any supported format, one API for all.

`open_volume(spec)` understands:

    precomputed://file:///path, gs://..., s3://..., https://...   (through cloud-volume)
    file.h5:volumes/raw          HDF5 dataset (CREMI `resolution` / `offset` attributes honoured)
    dir/  or  'dir/*.png'        PNG or TIFF stack, one image per z, natural sort
    file.zarr[:array]            zarr array (v2 or v3)
    file.n5:dataset              N5 dataset (through tensorstore)
    file.npy, file.npz:key       NumPy arrays

Every volume reads lazily: `read(box)` loads only that box. Arrays are z, y, x;
cloud-volume and N5 are x, y, z, and the conversion happens here and nowhere else.
"""
from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from volumes.errors import InputError, reason
from volumes.geometry import Box, nm_to_voxel

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
PRECOMPUTED_SCHEMES = ("precomputed://", "gs://", "s3://", "https://", "http://", "file://")


class Volume:
    """A read-only 3-D array in z, y, x with its voxel size in nanometres.

    Subclasses implement `_read(box)` for a box already checked to lie inside the volume.
    """

    def __init__(self, spec: str, shape: Sequence[int], dtype, resolution_nm: Sequence[float] | None,
                 offset_nm: Sequence[float] | None = None):
        if len(shape) != 3:
            raise InputError(f"{spec}: a volume must be 3-D (z, y, x), got a {len(shape)}-D array of shape {tuple(shape)}")
        if any(int(s) <= 0 for s in shape):
            raise InputError(f"{spec}: the volume is empty (shape {tuple(shape)})")
        self.spec = spec
        self.shape: tuple[int, int, int] = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.resolution_nm: tuple[float, float, float] = tuple(float(r) for r in (resolution_nm if resolution_nm is not None else (1.0, 1.0, 1.0)))
        self.offset_nm: tuple[float, float, float] = tuple(float(o) for o in (offset_nm if offset_nm is not None else (0.0, 0.0, 0.0)))
        self.has_resolution = resolution_nm is not None

    @property
    def box(self) -> Box:
        return Box.from_shape(self.shape)

    @property
    def voxel_offset(self) -> tuple[int, int, int]:
        """The volume's origin in voxels of its own resolution (Neuroglancer's voxel_offset, z, y, x)."""
        return tuple(int(round(o / r)) for o, r in zip(self.offset_nm, self.resolution_nm))

    def read(self, box: Box | None = None) -> np.ndarray:
        """Read a box (voxel coordinates of this volume, 0-based), or everything."""
        box = self.box if box is None else box
        if not self.box.contains(box):
            raise InputError(f"{self.spec}: box {box} lies outside the volume of shape {self.shape}")
        data = np.asarray(self._read(box))
        return data.reshape(box.shape)

    def read_nm(self, start_nm: Sequence[float], stop_nm: Sequence[float]) -> np.ndarray:
        """Read the voxels covering [start_nm, stop_nm) in physical coordinates."""
        start = nm_to_voxel(start_nm, self.resolution_nm, self.offset_nm)
        stop = np.ceil((np.asarray(stop_nm, dtype=np.float64) - self.offset_nm) / self.resolution_nm).astype(np.int64)
        return self.read(Box(tuple(start), tuple(stop)))

    def _read(self, box: Box) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec} shape={self.shape} dtype={self.dtype} resolution_nm={self.resolution_nm}>"


class ArrayVolume(Volume):
    """Any array-like already indexable in z, y, x (NumPy, memmap, h5py, zarr)."""

    def __init__(self, spec: str, array, resolution_nm=None, offset_nm=None):
        super().__init__(spec, array.shape, array.dtype, resolution_nm, offset_nm)
        self.array = array

    def _read(self, box: Box) -> np.ndarray:
        return self.array[box.slices()]


class StackVolume(Volume):
    """A directory or glob of 2-D images, one per z section, in natural order; reads only the sections asked for."""

    def __init__(self, spec: str, files: list[Path], resolution_nm=None):
        first = _read_image(files[0])
        super().__init__(spec, (len(files), *first.shape), first.dtype, resolution_nm)
        self.files = files

    def _read(self, box: Box) -> np.ndarray:
        out = np.empty(box.shape, dtype=self.dtype)
        ys, xs = box.slices()[1:]
        for i, z in enumerate(range(box.start[0], box.stop[0])):
            image = _read_image(self.files[z])
            if image.shape != self.shape[1:] or image.dtype != self.dtype:
                raise InputError(f"{self.files[z]}: image is {image.shape} {image.dtype}, the stack's first is {self.shape[1:]} {self.dtype}")
            out[i] = image[ys, xs]
        return out


class CloudVolumeSource(Volume):
    """Neuroglancer precomputed through cloud-volume (x, y, z, channel), at mip 0."""

    def __init__(self, spec: str, resolution_nm=None):
        from cloudvolume import CloudVolume
        from cloudvolume.exceptions import InfoUnavailableError

        url = spec if not spec.startswith("precomputed://") else spec
        try:
            self.cv = CloudVolume(url, mip=0, fill_missing=True, progress=False, bounded=True)
        except InfoUnavailableError:
            raise InputError(f"{spec}: no precomputed volume there (no info file)") from None
        if self.cv.num_channels != 1:
            raise InputError(f"{spec}: {self.cv.num_channels} channels; only single-channel volumes are supported")
        shape_xyz = self.cv.volume_size
        res_xyz = self.cv.resolution
        offset_xyz = self.cv.voxel_offset
        resolution = tuple(float(r) for r in reversed(res_xyz)) if resolution_nm is None else resolution_nm
        offset_nm = tuple(float(o) * float(r) for o, r in zip(reversed(offset_xyz), resolution))
        super().__init__(spec, tuple(int(s) for s in reversed(shape_xyz)), self.cv.dtype, resolution, offset_nm)
        self.layer_type = self.cv.layer_type

    def _read(self, box: Box) -> np.ndarray:
        origin = self.voxel_offset
        start = [a + o for a, o in zip(box.start, origin)]
        stop = [b + o for b, o in zip(box.stop, origin)]
        cutout = self.cv[start[2]:stop[2], start[1]:stop[1], start[0]:stop[0]]
        return np.asarray(cutout)[..., 0].transpose(2, 1, 0)


class TensorStoreVolume(Volume):
    """N5 datasets (x, y, z on disk) through tensorstore."""

    def __init__(self, spec: str, path: Path, resolution_nm=None):
        import tensorstore as ts

        try:
            store = ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(path)}}, read=True).result()
        except Exception as exc:
            raise InputError(f"{spec}: cannot open N5 dataset ({str(exc).splitlines()[0]})") from None
        attributes = _read_json(path / "attributes.json")
        if resolution_nm is None and "resolution" in attributes:
            resolution_nm = tuple(float(r) for r in reversed(attributes["resolution"]))
        if store.rank != 3:
            raise InputError(f"{spec}: a volume must be 3-D (z, y, x), got a {store.rank}-D array")
        self.store = store.T  # n5 dimension order is x, y, z: transpose to z, y, x
        super().__init__(spec, self.store.shape, self.store.dtype.numpy_dtype, resolution_nm)

    def _read(self, box: Box) -> np.ndarray:
        return self.store[box.slices()].read().result()


def open_volume(spec: str | os.PathLike, resolution_nm: Sequence[float] | None = None) -> Volume:
    """Open `spec` lazily; `resolution_nm` (z, y, x) overrides what the source declares."""
    spec = str(spec)
    if resolution_nm is not None:
        resolution_nm = tuple(float(r) for r in resolution_nm)
    if spec.startswith(PRECOMPUTED_SCHEMES):
        return CloudVolumeSource(_precomputed_url(spec), resolution_nm)
    path_text, key = _split_key(spec)
    path = Path(path_text)
    suffix = path.suffix.lower()
    if any(ch in path_text for ch in "*?[") and key is None:
        return _open_stack(spec, sorted_naturally(Path(p) for p in glob.glob(path_text)), resolution_nm)
    if not path.exists():
        raise InputError(f"{spec}: no such file or directory")
    if suffix in (".h5", ".hdf5", ".hdf"):
        return _open_hdf5(spec, path, key, resolution_nm)
    if suffix == ".npy":
        return ArrayVolume(spec, np.load(path, mmap_mode="r"), resolution_nm)
    if suffix == ".npz":
        return _open_npz(spec, path, key, resolution_nm)
    if suffix == ".n5" or (path / "attributes.json").is_file() and _read_json(path / "attributes.json").get("n5"):
        return TensorStoreVolume(spec, path / key if key else path, resolution_nm)
    if suffix == ".zarr" or (path / ".zarray").exists() or (path / "zarr.json").exists() or (path / ".zgroup").exists():
        return _open_zarr(spec, path, key, resolution_nm)
    if path.is_dir() and (path / "info").is_file():
        return CloudVolumeSource("precomputed://file://" + str(path.resolve()), resolution_nm)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        return _open_stack(spec, sorted_naturally(files), resolution_nm)
    if suffix in IMAGE_SUFFIXES:
        raise InputError(f"{spec}: a single image is 2-D; give the directory or a glob of the stack (one image per z)")
    raise InputError(f"{spec}: unknown volume format (expected precomputed, .h5:key, .zarr, .n5, .npy, .npz:key or an image stack)")


def sorted_naturally(paths) -> list[Path]:
    """Sort file names so that 'z2' comes before 'z10'."""
    from natsort import natsorted

    return natsorted(paths, key=lambda p: p.name)


def _precomputed_url(spec: str) -> str:
    if spec.startswith("file://"):
        return "precomputed://" + spec
    return spec


def _split_key(spec: str) -> tuple[str, str | None]:
    """'file.h5:volumes/raw' -> ('file.h5', 'volumes/raw'); paths without a container suffix keep any ':'."""
    for marker in (".h5:", ".hdf5:", ".hdf:", ".npz:", ".zarr:", ".n5:"):
        index = spec.lower().find(marker)
        if index >= 0:
            cut = index + len(marker) - 1
            return spec[:cut], spec[cut + 1:].strip("/") or None
    return spec, None


def _open_hdf5(spec: str, path: Path, key: str | None, resolution_nm) -> Volume:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{spec}: not a readable HDF5 file ({exc})") from None
    if key is None:
        names = _hdf5_datasets(handle)
        raise InputError(f"{spec}: name the dataset as {path}:KEY (datasets: {', '.join(names) or 'none'})")
    if key not in handle or not isinstance(handle[key], h5py.Dataset):
        names = _hdf5_datasets(handle)
        raise InputError(f"{spec}: no dataset {key!r} in {path} (datasets: {', '.join(names) or 'none'})")
    dataset = handle[key]
    if resolution_nm is None and "resolution" in dataset.attrs:
        resolution_nm = tuple(float(r) for r in dataset.attrs["resolution"])
    offset_nm = tuple(float(o) for o in dataset.attrs["offset"]) if "offset" in dataset.attrs else None
    return ArrayVolume(spec, dataset, resolution_nm, offset_nm)


def _hdf5_datasets(handle) -> list[str]:
    import h5py

    names: list[str] = []
    handle.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _open_npz(spec: str, path: Path, key: str | None, resolution_nm) -> Volume:
    try:
        archive = np.load(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{spec}: not a readable .npz file ({exc})") from None
    if key is None or key not in archive.files:
        what = "name the array as FILE.npz:KEY" if key is None else f"no array {key!r}"
        raise InputError(f"{spec}: {what} (arrays: {', '.join(archive.files)})")
    return ArrayVolume(spec, archive[key], resolution_nm)


def _open_zarr(spec: str, path: Path, key: str | None, resolution_nm) -> Volume:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
        if key:
            node = node[key]
    except Exception as exc:
        raise InputError(f"{spec}: cannot open zarr ({str(exc).splitlines()[0]})") from None
    if isinstance(node, zarr.Group):
        arrays = [name for name, _ in node.arrays()]
        raise InputError(f"{spec}: a zarr group; name the array as PATH.zarr:KEY (arrays: {', '.join(arrays) or 'none'})")
    attrs = dict(node.attrs)
    if resolution_nm is None and "resolution" in attrs:
        resolution_nm = tuple(float(r) for r in attrs["resolution"])
    offset_nm = tuple(float(o) for o in attrs["offset"]) if "offset" in attrs else None
    return ArrayVolume(spec, node, resolution_nm, offset_nm)


def _open_stack(spec: str, files: list[Path], resolution_nm) -> Volume:
    files = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise InputError(f"{spec}: no PNG or TIFF images found")
    return StackVolume(spec, files, resolution_nm)


def _read_image(path: Path) -> np.ndarray:
    """One section as a 2-D array, read by what its pixels mean rather than how they are stored.

    The rule (PNG and TIFF alike):
    - grey images (8, 16 or 32 bit, float) are read as stored;
    - 1-bit images are black/white: 0 and 255, as PIL converts mode "1" to "L";
    - palette images whose palette entries are all grey (r = g = b) are images or masks drawn in grey:
      each pixel is its entry's grey value, so a mask whose index 0 is white reads white where it is 0;
    - palette images with colours are label tables: each pixel is its palette index (a label id);
    - RGB(A) images are read as grey when their three channels are equal (alpha ignored), else refused:
      there is no single meaning for colour here.
    """
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            image, palette = _read_tiff_section(path)
        else:
            image, palette = _read_png_section(path)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: cannot read image ({reason(exc)})") from None
    if palette is not None:
        image = _resolve_palette(image, palette)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        rgb = image[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise InputError(f"{path}: a colour image; convert it to greyscale (or a label image) first")
        image = np.ascontiguousarray(rgb[..., 0])
    if image.ndim == 3 and image.shape[2] == 2:  # grey + alpha
        image = np.ascontiguousarray(image[..., 0])
    if image.ndim != 2:
        raise InputError(f"{path}: expected a single-channel 2-D image, got shape {image.shape}")
    if image.dtype == bool:  # 1-bit images mean black/white: 0/255, as PIL converts mode "1" to "L"
        image = image.astype(np.uint8) * np.uint8(255)
    return image


def _read_png_section(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(pixels, palette as (n, 3) RGB or None) of a PNG, or any image PIL opens."""
    from PIL import Image

    with Image.open(path) as handle:
        if handle.mode in ("P", "PA"):
            palette = np.asarray(handle.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)
            return np.asarray(handle.convert("P") if handle.mode == "PA" else handle), palette
        return np.asarray(handle), None


def _read_tiff_section(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(pixels, palette as (n, 3) or None) of a TIFF's first page; a TIFF palette is 16 bit per channel."""
    import tifffile

    with tifffile.TiffFile(path) as handle:
        page = handle.pages[0]
        image = page.asarray()
        if page.photometric == tifffile.PHOTOMETRIC.PALETTE and page.colormap is not None:
            # TIFF colormaps are 16 bit per channel; writers store 8-bit colours as x * 257 or x << 8,
            # and either way the high byte is the colour as shown.
            colormap = (np.asarray(page.colormap).T >> 8).astype(np.uint8)  # (n, 3)
            return image, colormap
    return image, None


def _resolve_palette(indices: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Grey palettes give each pixel its grey value (in the palette's own depth); colour palettes keep the index."""
    used = np.unique(indices)
    if used.size and int(used.max()) >= len(palette):
        return indices  # indices beyond the palette: only the index has a meaning
    entries = palette[used]
    if entries.size and np.all(entries == entries[:, :1]):
        return palette[:, 0][indices]
    return indices


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
