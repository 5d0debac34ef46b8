"""Synthetic EM volumes with exact ground truth, for offline demos and exact-truth tests.

A test and demo aid, never a substitute for real data. The generator draws:

* neurites: branching, wandering centre lines that fill the volume; each voxel belongs
  to the nearest neurite (thicker neurites claim more space), so labels are dense
  (no background 0) and every id is one connected piece inside the volume;
* membranes: dark, about 2 voxels thick at 8 nm (1 voxel each side of a label boundary);
* intracellular texture (smooth grain per neuron), dark mitochondria blobs;
* synapses where two neurites touch: a dark cleft band along the contact, a
  post-synaptic density on the post side and a cloud of dark vesicles on the
  pre side; each has a pre and a post point annotation (CREMI style);
* blur and Gaussian noise.

Everything is drawn from `numpy.random.default_rng(seed)`: a seed gives identical output.

CREMI layout written by `write_cremi` (every dataset has `resolution` and `offset`
attributes in nm, z,y,x):

    /volumes/raw                             uint8
    /volumes/labels/neuron_ids               uint64, dense, ids 1..N
    /volumes/labels/clefts                   uint64 cleft instances 1..K, background 0
                                             (CREMI itself uses 0xFFFFFFFFFFFFFFFF)
    /annotations/ids                         uint64 annotation ids
    /annotations/types                       "presynaptic_site" / "postsynaptic_site"
    /annotations/locations                   float64 nm (z,y,x), voxel centres, relative to
                                             the `offset` attribute of /annotations
    /annotations/presynaptic_site/partners   (K, 2) annotation ids (pre, post), as in CREMI
    /annotations/presynaptic_site/partner_neuron_ids
                                             (K, 2) neuron ids (pre, post); our extension,
                                             the exact partner truth without a lookup
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cc3d
import numpy as np
from scipy import ndimage

from volumes.atomic import atomic_path
from volumes.errors import InputError

DEFAULT_RESOLUTION_NM = (8.0, 8.0, 8.0)
MEMBRANE_HALF_THICKNESS_NM = 8.0
CLEFT_HALF_WIDTH_NM = 12.0
CLEFT_RADIUS_NM = 110.0
VESICLE_CLOUD_RADIUS_NM = 200.0
MIN_SYNAPSE_SPACING_NM = 400.0
NEURITE_RADIUS_RANGE_NM = (80.0, 220.0)


@dataclass
class Neurite:
    """A centre line (points in nm) with a radius per point; `neuron` numbers the neuron it belongs to."""

    points_nm: np.ndarray
    radii_nm: np.ndarray
    neuron: int = 0


def synthesize(
    shape_zyx: Sequence[int],
    seed: int,
    resolution_nm: Sequence[float] = DEFAULT_RESOLUTION_NM,
    synapses_per_cubic_um: float = 8.0,
) -> dict[str, Any]:
    """Draw one synthetic EM volume.

    Returns a dict: `raw` (uint8), `neuron_ids` (uint64), `clefts` (uint64),
    `resolution_nm`, and `annotations` (CREMI arrays: `ids`, `types`, `locations_nm`,
    `partners` (annotation ids), `partner_neuron_ids`).
    """
    shape = tuple(int(s) for s in shape_zyx)
    if len(shape) != 3 or any(s < 8 for s in shape):
        raise InputError(f"a synthetic volume needs three sizes of at least 8 voxels, got {shape_zyx}")
    resolution = np.asarray(resolution_nm, dtype=np.float64)
    if resolution.shape != (3,) or np.any(~np.isfinite(resolution)) or np.any(resolution <= 0):
        raise InputError(f"resolution must be three positive numbers in nm, got {resolution_nm}")
    rng = np.random.default_rng(seed)

    neurites = _grow_neurites(rng, shape, resolution)
    neuron_ids = _label_neurites(neurites, shape, resolution)
    image = _draw_cells(rng, neuron_ids, neurites, resolution)
    clefts, annotations = _draw_synapses(rng, image, neuron_ids, resolution, synapses_per_cubic_um)
    raw = _finish_image(rng, image, resolution)
    return {
        "raw": raw,
        "neuron_ids": neuron_ids,
        "clefts": clefts,
        "resolution_nm": tuple(float(r) for r in resolution),
        "annotations": annotations,
    }


# --- neurites -----------------------------------------------------------------------------------


def _grow_neurites(rng: np.random.Generator, shape: tuple, resolution: np.ndarray) -> list[Neurite]:
    """Add wandering, branching neurites through the emptiest place until the volume is covered."""
    extent_nm = np.asarray(shape) * resolution
    coarse_factor = np.maximum(1, np.round(40.0 / resolution)).astype(int)
    coarse_shape = tuple(int(np.ceil(s / f)) for s, f in zip(shape, coarse_factor))
    coarse_resolution = resolution * coarse_factor
    occupied = np.zeros(coarse_shape, dtype=bool)
    cover_nm = 0.95 * NEURITE_RADIUS_RANGE_NM[1]
    neurites: list[Neurite] = []
    neuron = 0
    for _ in range(2000):
        if occupied.any():
            distance = ndimage.distance_transform_edt(~occupied, sampling=coarse_resolution)
            farthest = np.unravel_index(int(np.argmax(distance)), coarse_shape)
            if distance[farthest] < cover_nm:
                break
            start_nm = (np.asarray(farthest) + 0.5) * coarse_resolution
        else:
            start_nm = rng.uniform(0.25, 0.75, size=3) * extent_nm
        radius_nm = rng.uniform(*NEURITE_RADIUS_RANGE_NM)
        neuron = neuron + 1
        for neurite in _walk_neurite(rng, start_nm, radius_nm, extent_nm):
            neurite.neuron = neuron
            neurites.append(neurite)
            index = np.clip((neurite.points_nm / coarse_resolution).astype(int), 0, np.asarray(coarse_shape) - 1)
            occupied[tuple(index.T)] = True
    return neurites


def _random_direction(rng: np.random.Generator) -> np.ndarray:
    direction = rng.normal(size=3)
    return direction / np.linalg.norm(direction)


def _walk_neurite(rng: np.random.Generator, start_nm: np.ndarray, radius_nm: float, extent_nm: np.ndarray) -> list[Neurite]:
    """One neuron: a centre line through start_nm in both directions, plus side branches (same neuron)."""
    direction = _random_direction(rng)
    forward = _walk_line(rng, start_nm, direction, radius_nm, extent_nm)
    backward = _walk_line(rng, start_nm, -direction, radius_nm, extent_nm)
    trunk = Neurite(
        np.concatenate([backward.points_nm[::-1], forward.points_nm[1:]]),
        np.concatenate([backward.radii_nm[::-1], forward.radii_nm[1:]]),
    )
    pieces = [trunk]
    for index in range(len(trunk.points_nm)):
        if rng.random() < 0.012:
            branch_direction = _random_direction(rng)
            branch_radius = max(NEURITE_RADIUS_RANGE_NM[0] * 0.8, 0.7 * trunk.radii_nm[index])
            pieces.append(_walk_line(rng, trunk.points_nm[index], branch_direction, branch_radius, extent_nm, max_steps=60))
    return pieces


def _walk_line(rng, start_nm, direction, radius_nm, extent_nm, max_steps: int = 400) -> Neurite:
    """A persistent random walk that stops once it leaves the volume (plus a margin)."""
    step_nm = 0.3 * NEURITE_RADIUS_RANGE_NM[0]
    margin = radius_nm
    points, radii = [np.asarray(start_nm, dtype=np.float64)], [radius_nm]
    position, heading = points[0].copy(), direction.copy()
    radius_scale = 1.0
    for _ in range(max_steps):
        heading = heading + rng.normal(scale=0.12, size=3)
        heading /= np.linalg.norm(heading)
        position = position + step_nm * heading
        radius_scale = float(np.clip(radius_scale + rng.normal(scale=0.04), 0.8, 1.2))
        if np.any(position < -margin) or np.any(position > extent_nm + margin):
            break
        points.append(position.copy())
        radii.append(radius_nm * radius_scale)
    return Neurite(np.asarray(points), np.asarray(radii))


def _label_neurites(neurites: list[Neurite], shape: tuple, resolution: np.ndarray) -> np.ndarray:
    """Dense labels: each voxel goes to the nearest neurite core; then one id per connected piece."""
    cores = np.zeros(shape, dtype=np.uint32)
    for neurite in neurites:
        for point_nm, radius_nm in zip(neurite.points_nm, neurite.radii_nm):
            _paint_ball(cores, point_nm, 0.45 * radius_nm, resolution, neurite.neuron)
    if not cores.any():  # a volume too small for any core: one neuron fills it
        return np.ones(shape, dtype=np.uint64)
    _, nearest = ndimage.distance_transform_edt(cores == 0, sampling=resolution, return_indices=True)
    labels = cores[tuple(nearest)]
    pieces = cc3d.connected_components(labels, connectivity=6)
    # Small fragments (cut off where neurites cross) join their nearest neighbour.
    sizes = np.bincount(pieces.ravel())
    small = sizes[pieces] < max(64, labels.size // 20000)
    if small.any() and not small.all():
        _, nearest = ndimage.distance_transform_edt(small, sampling=resolution, return_indices=True)
        pieces = pieces[tuple(nearest)]
    relabelled = cc3d.connected_components(pieces, connectivity=6)
    return relabelled.astype(np.uint64)


def _paint_ball(volume: np.ndarray, center_nm: np.ndarray, radius_nm: float, resolution: np.ndarray, value) -> None:
    """Set the voxels within radius_nm of center_nm (voxel centres) to value, clipped to the volume."""
    center_vox = center_nm / resolution - 0.5
    half = np.ceil(radius_nm / resolution).astype(int)
    low = np.maximum(np.floor(center_vox).astype(int) - half, 0)
    high = np.minimum(np.floor(center_vox).astype(int) + half + 2, volume.shape)
    if np.any(high <= low):
        return
    grids = np.ogrid[low[0]:high[0], low[1]:high[1], low[2]:high[2]]
    squared = sum(((g - c) * r) ** 2 for g, c, r in zip(grids, center_vox, resolution))
    region = volume[low[0]:high[0], low[1]:high[1], low[2]:high[2]]
    region[squared <= radius_nm**2] = value


# --- image --------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple, sigma_nm: float, resolution: np.ndarray) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation: grain of about sigma_nm."""
    noise = rng.standard_normal(size=shape, dtype=np.float32)
    smooth = ndimage.gaussian_filter(noise, sigma=tuple(sigma_nm / resolution), mode="reflect")
    return smooth / max(float(smooth.std()), 1e-6)


def _membranes(labels: np.ndarray, resolution: np.ndarray) -> np.ndarray:
    """Voxels closer than MEMBRANE_HALF_THICKNESS_NM to a label boundary (both sides of it)."""
    boundary = np.zeros(labels.shape, dtype=bool)
    for axis in range(3):
        lower = [slice(None)] * 3
        upper = [slice(None)] * 3
        lower[axis], upper[axis] = slice(0, -1), slice(1, None)
        differs = labels[tuple(lower)] != labels[tuple(upper)]
        boundary[tuple(lower)] |= differs
        boundary[tuple(upper)] |= differs
    if not boundary.any():
        return boundary
    return ndimage.distance_transform_edt(~boundary, sampling=resolution) < MEMBRANE_HALF_THICKNESS_NM


def _draw_cells(rng: np.random.Generator, labels: np.ndarray, neurites: list[Neurite], resolution: np.ndarray) -> np.ndarray:
    """Cytoplasm with per-neuron brightness and grain, dark mitochondria, dark membranes (float image)."""
    brightness = rng.uniform(160.0, 190.0, size=int(labels.max()) + 1).astype(np.float32)
    image = brightness[labels] + 9.0 * _smooth_noise(rng, labels.shape, 10.0, resolution)
    membrane = _membranes(labels, resolution)
    mitochondria = _mitochondria(rng, labels, neurites, resolution) & ~ndimage.binary_dilation(membrane)
    image[mitochondria] = 95.0 + 0.5 * (image[mitochondria] - 170.0)
    image[membrane] = 55.0 + 0.3 * (image[membrane] - 170.0)
    return image


def _mitochondria(rng: np.random.Generator, labels: np.ndarray, neurites: list[Neurite], resolution: np.ndarray) -> np.ndarray:
    """Elongated ellipsoids along some neurites, each kept inside the neuron at its centre."""
    mask = np.zeros(labels.shape, dtype=bool)
    for neurite in neurites:
        for index in range(1, len(neurite.points_nm) - 1):
            if rng.random() >= 0.02:
                continue
            center_nm = neurite.points_nm[index]
            axis = neurite.points_nm[index + 1] - neurite.points_nm[index - 1]
            axis /= max(np.linalg.norm(axis), 1e-9)
            half_width_nm = 0.35 * neurite.radii_nm[index]
            half_length_nm = rng.uniform(2.0, 4.0) * half_width_nm
            _paint_ellipsoid(mask, labels, center_nm, axis, half_length_nm, half_width_nm, resolution)
    return mask


def _paint_ellipsoid(mask, labels, center_nm, axis, half_length_nm, half_width_nm, resolution) -> None:
    center_vox = np.floor(center_nm / resolution).astype(int)
    if np.any(center_vox < 0) or np.any(center_vox >= labels.shape):
        return
    owner = labels[tuple(center_vox)]
    half = np.ceil(half_length_nm / resolution).astype(int)
    low = np.maximum(center_vox - half, 0)
    high = np.minimum(center_vox + half + 1, labels.shape)
    grids = np.ogrid[low[0]:high[0], low[1]:high[1], low[2]:high[2]]
    offsets = [(g + 0.5) * r - c for g, r, c in zip(grids, resolution, center_nm)]
    along = sum(o * a for o, a in zip(offsets, axis))
    squared = sum(o**2 for o in offsets)
    across_squared = np.maximum(squared - along**2, 0.0)
    inside = (along / half_length_nm) ** 2 + across_squared / half_width_nm**2 <= 1.0
    region = (slice(low[0], high[0]), slice(low[1], high[1]), slice(low[2], high[2]))
    mask[region] |= inside & (labels[region] == owner)


def _finish_image(rng: np.random.Generator, image: np.ndarray, resolution: np.ndarray) -> np.ndarray:
    """Microscope blur, then Gaussian noise, then 8 bits."""
    sigma = tuple(s if s >= 0.3 else 0.0 for s in 6.0 / resolution)
    blurred = ndimage.gaussian_filter(image, sigma=sigma, mode="reflect")
    noisy = blurred + rng.normal(scale=10.0, size=image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


# --- synapses -----------------------------------------------------------------------------------


def _draw_synapses(rng, image, labels, resolution, synapses_per_cubic_um: float):
    """Place synapses on contacts between neurons; draw them into image; return clefts and annotations."""
    shape = np.asarray(labels.shape)
    volume_cubic_um = float(np.prod(shape * resolution)) / 1e9
    wanted = int(round(volume_cubic_um * synapses_per_cubic_um))
    if synapses_per_cubic_um > 0:
        wanted = max(1, wanted)
    candidates = _contact_candidates(labels)
    clefts = np.zeros(labels.shape, dtype=np.uint64)
    sites_nm: list[np.ndarray] = []
    records: list[tuple[int, int, np.ndarray, np.ndarray]] = []
    order = rng.permutation(len(candidates))[: 60 * wanted]
    for index in order:
        if len(records) >= wanted:
            break
        voxel, axis = candidates[index, :3], candidates[index, 3]
        center_nm = (voxel + 0.5) * resolution
        center_nm[axis] += 0.5 * resolution[axis]
        if any(np.linalg.norm(center_nm - s) < MIN_SYNAPSE_SPACING_NM for s in sites_nm):
            continue
        other = voxel.copy()
        other[axis] += 1
        pair = [int(labels[tuple(voxel)]), int(labels[tuple(other)])]
        pre, post = pair if rng.random() < 0.5 else pair[::-1]
        synapse = _draw_one_synapse(rng, image, labels, clefts, len(records) + 1, center_nm, pre, post, resolution)
        if synapse is not None:
            sites_nm.append(center_nm)
            records.append((pre, post, *synapse))
    return clefts, _annotations(records)


def _contact_candidates(labels: np.ndarray) -> np.ndarray:
    """(z, y, x, axis) of every voxel whose +axis neighbour has another label."""
    found = []
    for axis in range(3):
        lower = [slice(None)] * 3
        upper = [slice(None)] * 3
        lower[axis], upper[axis] = slice(0, -1), slice(1, None)
        positions = np.argwhere(labels[tuple(lower)] != labels[tuple(upper)])
        found.append(np.column_stack([positions, np.full(len(positions), axis)]))
    return np.concatenate(found) if found else np.zeros((0, 4), dtype=np.int64)


def _draw_one_synapse(rng, image, labels, clefts, cleft_id, center_nm, pre, post, resolution):
    """Cleft, PSD and vesicle cloud around center_nm; returns (pre_nm, post_nm) or None if the contact is too small."""
    reach_nm = VESICLE_CLOUD_RADIUS_NM + 2 * float(resolution.max())
    center_vox = np.floor(center_nm / resolution).astype(int)
    half = np.ceil(reach_nm / resolution).astype(int)
    low = np.maximum(center_vox - half, 0)
    high = np.minimum(center_vox + half + 1, labels.shape)
    region = tuple(slice(a, b) for a, b in zip(low, high))
    local = labels[region]
    is_pre, is_post = local == pre, local == post
    to_post = ndimage.distance_transform_edt(~is_post, sampling=resolution)
    to_pre = ndimage.distance_transform_edt(~is_pre, sampling=resolution)
    grids = np.ogrid[low[0]:high[0], low[1]:high[1], low[2]:high[2]]
    from_center = np.sqrt(sum(((g + 0.5) * r - c) ** 2 for g, r, c in zip(grids, resolution, center_nm)))
    near = from_center <= CLEFT_RADIUS_NM
    cleft = near & ((is_pre & (to_post <= CLEFT_HALF_WIDTH_NM)) | (is_post & (to_pre <= CLEFT_HALF_WIDTH_NM)))
    cleft = cc3d.largest_k(cleft, k=1, connectivity=26) > 0 if cleft.any() else cleft
    expected_voxels = np.pi * CLEFT_RADIUS_NM**2 * 2 * CLEFT_HALF_WIDTH_NM / float(np.prod(resolution))
    if cleft.sum() < 0.35 * expected_voxels or np.any(clefts[region][cleft]):
        return None
    side_band = (CLEFT_HALF_WIDTH_NM + 12.0, CLEFT_HALF_WIDTH_NM + 50.0)
    pre_nm = _site_point(is_pre & near & (to_post >= side_band[0]) & (to_post <= side_band[1]), low, resolution)
    post_nm = _site_point(is_post & near & (to_pre >= side_band[0]) & (to_pre <= side_band[1]), low, resolution)
    if pre_nm is None or post_nm is None:
        return None
    view = image[region]
    density = is_post & (to_pre > CLEFT_HALF_WIDTH_NM) & (to_pre <= CLEFT_HALF_WIDTH_NM + 30.0) & (from_center <= 1.1 * CLEFT_RADIUS_NM)
    view[density] -= 55.0
    cloud = is_pre & (to_post > CLEFT_HALF_WIDTH_NM + 4.0) & (from_center <= VESICLE_CLOUD_RADIUS_NM)
    view -= _vesicles(rng, cloud, resolution) * is_pre
    view[cleft] = 30.0
    clefts[region][cleft] = cleft_id
    return pre_nm, post_nm


def _site_point(candidates: np.ndarray, low: np.ndarray, resolution: np.ndarray) -> np.ndarray | None:
    """The candidate voxel nearest the candidates' centroid (so it lies inside them), as its centre in nm."""
    points = np.argwhere(candidates)
    if len(points) == 0:
        return None
    nearest = points[np.argmin(np.sum(((points - points.mean(axis=0)) * resolution) ** 2, axis=1))]
    return (nearest + low + 0.5) * resolution


def _vesicles(rng: np.random.Generator, cloud: np.ndarray, resolution: np.ndarray) -> np.ndarray:
    """Darkening by small round vesicles (~40 nm) scattered over the cloud region."""
    darkening = np.zeros(cloud.shape, dtype=np.float32)
    inside = np.argwhere(cloud)
    if len(inside) == 0:
        return darkening
    vesicle_voxels = (4.0 / 3.0) * np.pi * 20.0**3 / float(np.prod(resolution))
    count = max(1, int(0.45 * len(inside) / max(vesicle_voxels, 1.0)))
    chosen = inside[rng.choice(len(inside), size=min(count, len(inside)), replace=False)]
    darkening[tuple(chosen.T)] = 1.0
    sigma = tuple(12.0 / resolution)
    darkening = ndimage.gaussian_filter(darkening, sigma=sigma, mode="constant")
    peak = float(darkening.max())
    return darkening * (95.0 / peak) if peak > 0 else darkening


def _annotations(records) -> dict[str, np.ndarray]:
    """CREMI annotation arrays: pre site k has id 2k+1, its post site 2k+2."""
    count = len(records)
    ids = np.arange(1, 2 * count + 1, dtype=np.uint64)
    types = np.array(["presynaptic_site", "postsynaptic_site"] * count, dtype=object)
    locations = np.zeros((2 * count, 3), dtype=np.float64)
    neuron_pairs = np.zeros((count, 2), dtype=np.uint64)
    for k, (pre, post, pre_nm, post_nm) in enumerate(records):
        locations[2 * k], locations[2 * k + 1] = pre_nm, post_nm
        neuron_pairs[k] = (pre, post)
    partners = ids.reshape(count, 2) if count else np.zeros((0, 2), dtype=np.uint64)
    return {"ids": ids, "types": types, "locations_nm": locations, "partners": partners, "partner_neuron_ids": neuron_pairs}


# --- CREMI file ---------------------------------------------------------------------------------


def write_cremi(path: str | Path, volume: dict[str, Any]) -> Path:
    """Write a `synthesize` result as a CREMI-layout HDF5, atomically (temp file, then rename)."""
    import h5py

    path = Path(path)
    resolution = np.asarray(volume["resolution_nm"], dtype=np.float64)
    offset = np.zeros(3, dtype=np.float64)
    annotations = volume["annotations"]
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as f:
        datasets = {
            "volumes/raw": volume["raw"],
            "volumes/labels/neuron_ids": volume["neuron_ids"],
            "volumes/labels/clefts": volume["clefts"],
        }
        for name, array in datasets.items():
            chunks = tuple(min(64, s) for s in array.shape)
            dataset = f.create_dataset(name, data=array, chunks=chunks, compression="gzip", compression_opts=1)
            dataset.attrs["resolution"] = resolution
            dataset.attrs["offset"] = offset
        group = f.create_group("annotations")
        group.attrs["offset"] = offset
        group.create_dataset("ids", data=annotations["ids"])
        group.create_dataset("types", data=annotations["types"].astype(object), dtype=h5py.string_dtype())
        group.create_dataset("locations", data=annotations["locations_nm"])
        group.create_dataset("presynaptic_site/partners", data=annotations["partners"])
        group.create_dataset("presynaptic_site/partner_neuron_ids", data=annotations["partner_neuron_ids"])
    return path


def read_cremi_synapses(path: str | Path) -> dict[str, np.ndarray]:
    """The (pre_nm, post_nm) point pairs of a CREMI file's annotations, with partner neuron ids when present.

    Returns `pre_nm` and `post_nm` (K, 3 nm, z,y,x, offset added) and `neuron_ids`
    ((K, 2) or None when the file has only annotation ids).
    """
    import h5py

    with h5py.File(path, "r") as f:
        if "annotations/presynaptic_site/partners" not in f:
            raise InputError(f"{path} has no /annotations/presynaptic_site/partners")
        group = f["annotations"]
        offset = np.asarray(group.attrs.get("offset", (0.0, 0.0, 0.0)), dtype=np.float64)
        location_of = {int(i): loc + offset for i, loc in zip(group["ids"][:], group["locations"][:])}
        partners = np.asarray(group["presynaptic_site/partners"][:], dtype=np.uint64).reshape(-1, 2)
        neuron_ids = None
        if "presynaptic_site/partner_neuron_ids" in group:
            neuron_ids = np.asarray(group["presynaptic_site/partner_neuron_ids"][:], dtype=np.uint64).reshape(-1, 2)
    pre_nm = np.array([location_of[int(p)] for p in partners[:, 0]], dtype=np.float64).reshape(-1, 3)
    post_nm = np.array([location_of[int(p)] for p in partners[:, 1]], dtype=np.float64).reshape(-1, 3)
    return {"pre_nm": pre_nm, "post_nm": post_nm, "neuron_ids": neuron_ids}
