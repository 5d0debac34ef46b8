"""Voxel boxes (z, y, x) and their conversion to and from nanometres.

Voxel coordinates are integer (z, y, x) tuples; physical positions are
nanometres and carry `_nm` in their names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from volumes.errors import InputError

Zyx = tuple[int, int, int]


def parse_zyx(text: str, what: str = "value", as_float: bool = False) -> tuple:
    """Parse 'z,y,x' (three positive numbers) into a tuple, or raise a one-line InputError."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3:
        raise InputError(f"{what} must be three comma-separated numbers z,y,x, got {text!r}")
    try:
        values = tuple(float(p) if as_float else int(p) for p in parts)
    except ValueError:
        raise InputError(f"{what} must be three comma-separated numbers z,y,x, got {text!r}") from None
    if as_float and any(not np.isfinite(v) or v <= 0 for v in values):
        raise InputError(f"{what} must be positive, got {text!r}")
    return values


@dataclass(frozen=True)
class Box:
    """A half-open voxel box [start, stop) in z, y, x."""

    start: Zyx
    stop: Zyx

    def __post_init__(self):
        start = tuple(int(v) for v in self.start)
        stop = tuple(int(v) for v in self.stop)
        if len(start) != 3 or len(stop) != 3:
            raise InputError("a box needs three start and three stop coordinates (z, y, x)")
        if any(b < a for a, b in zip(start, stop)):
            raise InputError(f"box stop {stop} is before its start {start}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "stop", stop)

    @classmethod
    def from_shape(cls, shape: Sequence[int], start: Sequence[int] = (0, 0, 0)) -> "Box":
        start = tuple(int(v) for v in start)
        return cls(start, tuple(a + int(s) for a, s in zip(start, shape)))

    @classmethod
    def parse(cls, text: str) -> "Box":
        """Parse 'z0,y0,x0,z1,y1,x1' as used by --bbox."""
        parts = [p.strip() for p in str(text).split(",")]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 6:
            raise InputError(f"a bbox is six integers z0,y0,x0,z1,y1,x1, got {text!r}")
        box = cls(tuple(values[:3]), tuple(values[3:]))
        if box.is_empty:
            raise InputError(f"bbox {text!r} is empty")
        return box

    @property
    def shape(self) -> Zyx:
        return tuple(b - a for a, b in zip(self.start, self.stop))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def is_empty(self) -> bool:
        return any(s <= 0 for s in self.shape)

    def contains(self, other: "Box") -> bool:
        return all(a <= c and d <= b for a, b, c, d in zip(self.start, self.stop, other.start, other.stop))

    def intersect(self, other: "Box") -> "Box":
        start = tuple(max(a, b) for a, b in zip(self.start, other.start))
        stop = tuple(max(s, min(a, b)) for s, a, b in zip(start, self.stop, other.stop))
        return Box(start, stop)

    def translate(self, delta: Sequence[int]) -> "Box":
        return Box(tuple(a + int(d) for a, d in zip(self.start, delta)), tuple(b + int(d) for b, d in zip(self.stop, delta)))

    def grow(self, margin: Sequence[int] | int) -> "Box":
        m = (margin,) * 3 if isinstance(margin, (int, np.integer)) else tuple(margin)
        return Box(tuple(a - int(d) for a, d in zip(self.start, m)), tuple(b + int(d) for b, d in zip(self.stop, m)))

    def slices(self, relative_to: Sequence[int] = (0, 0, 0)) -> tuple[slice, slice, slice]:
        return tuple(slice(a - o, b - o) for a, b, o in zip(self.start, self.stop, relative_to))

    def chunks(self, chunk_shape: Sequence[int]) -> Iterator["Box"]:
        """Tile the box with chunk_shape boxes (the last ones clipped)."""
        ranges = [range(a, b, int(c)) for a, b, c in zip(self.start, self.stop, chunk_shape)]
        for z in ranges[0]:
            for y in ranges[1]:
                for x in ranges[2]:
                    start = (z, y, x)
                    stop = tuple(min(s + int(c), b) for s, c, b in zip(start, chunk_shape, self.stop))
                    yield Box(start, stop)

    def __str__(self) -> str:
        return ",".join(str(v) for v in self.start + self.stop)


def voxel_to_nm(zyx: Sequence[float], resolution_nm: Sequence[float], offset_nm: Sequence[float] = (0, 0, 0)) -> np.ndarray:
    """Voxel index (z, y, x) to physical position in nm (the voxel's corner, as Neuroglancer places it)."""
    return np.asarray(zyx, dtype=np.float64) * np.asarray(resolution_nm, dtype=np.float64) + np.asarray(offset_nm, dtype=np.float64)


def nm_to_voxel(position_nm: Sequence[float], resolution_nm: Sequence[float], offset_nm: Sequence[float] = (0, 0, 0)) -> np.ndarray:
    """Physical position in nm to the (z, y, x) index of the voxel containing it."""
    return np.floor((np.asarray(position_nm, dtype=np.float64) - np.asarray(offset_nm, dtype=np.float64)) / np.asarray(resolution_nm, dtype=np.float64)).astype(np.int64)
