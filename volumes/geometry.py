"""Voxel geometry, written once: coordinates, boxes, blocks with context, and voxel <-> nm conversion.

Voxel coordinates are integer (z, y, x) `Coordinate`s (tuples with elementwise arithmetic);
physical positions are nanometres and carry `_nm` in their names. A voxel index names the voxel
whose *corner* sits at `index * resolution + offset` (Neuroglancer's and precomputed's convention);
`voxel_to_nm(..., at=CENTRE)` asks for the voxel's centre instead, as centroids and synapse sites do.

Blockwise work follows daisy's model: `Box.blocks(write_shape, context)` gives each block the box
it writes (the tiles cover the volume once) and the larger box it reads (write box plus context,
clipped to the volume unless asked otherwise). FFN subvolumes, synapse detection, meshing and
import all tile through it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from volumes.errors import InputError

Zyx = tuple[int, int, int]
CORNER = "corner"
CENTRE = "centre"


class Coordinate(tuple):
    """Three integers z, y, x with elementwise +, -, *, // (against a Coordinate, a sequence or a number)."""

    def __new__(cls, values: Sequence[int]) -> "Coordinate":
        values = tuple(int(v) for v in values)
        if len(values) != 3:
            raise InputError(f"a coordinate has three values z, y, x, got {values}")
        return super().__new__(cls, values)

    @staticmethod
    def _other(other: "Sequence[int] | int") -> tuple:
        return (other,) * 3 if isinstance(other, (int, np.integer)) else tuple(other)

    def __add__(self, other):
        return Coordinate(a + b for a, b in zip(self, self._other(other)))

    __radd__ = __add__

    def __sub__(self, other):
        return Coordinate(a - b for a, b in zip(self, self._other(other)))

    def __rsub__(self, other):
        return Coordinate(b - a for a, b in zip(self, self._other(other)))

    def __mul__(self, other):
        return Coordinate(a * b for a, b in zip(self, self._other(other)))

    __rmul__ = __mul__

    def __floordiv__(self, other):
        return Coordinate(a // b for a, b in zip(self, self._other(other)))

    def __neg__(self):
        return Coordinate(-a for a in self)

    def ceil_div(self, other) -> "Coordinate":
        return Coordinate(-(-a // b) for a, b in zip(self, self._other(other)))

    def minimum(self, other) -> "Coordinate":
        return Coordinate(min(a, b) for a, b in zip(self, self._other(other)))

    def maximum(self, other) -> "Coordinate":
        return Coordinate(max(a, b) for a, b in zip(self, self._other(other)))


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
        if len(tuple(self.start)) != 3 or len(tuple(self.stop)) != 3:
            raise InputError("a box needs three start and three stop coordinates (z, y, x)")
        start, stop = Coordinate(self.start), Coordinate(self.stop)
        if any(b < a for a, b in zip(start, stop)):
            raise InputError(f"box stop {stop} is before its start {start}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "stop", stop)

    @classmethod
    def from_shape(cls, shape: Sequence[int], start: Sequence[int] = (0, 0, 0)) -> "Box":
        start = Coordinate(start)
        return cls(start, start + Coordinate(shape))

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
    def shape(self) -> Coordinate:
        return self.stop - self.start

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def is_empty(self) -> bool:
        return any(s <= 0 for s in self.shape)

    def contains(self, other: "Box") -> bool:
        return all(a <= c and d <= b for a, b, c, d in zip(self.start, self.stop, other.start, other.stop))

    def intersect(self, other: "Box") -> "Box":
        start = self.start.maximum(other.start)
        return Box(start, self.stop.minimum(other.stop).maximum(start))

    def translate(self, delta: Sequence[int]) -> "Box":
        return Box(self.start + delta, self.stop + delta)

    def grow(self, low: Sequence[int] | int, high: Sequence[int] | int | None = None) -> "Box":
        """The box with `low` voxels more before its start and `high` (default: `low`) after its stop."""
        return Box(self.start - low, self.stop + (low if high is None else high))

    def slices(self, relative_to: Sequence[int] = (0, 0, 0)) -> tuple[slice, slice, slice]:
        return tuple(slice(a - o, b - o) for a, b, o in zip(self.start, self.stop, relative_to))

    def chunks(self, chunk_shape: Sequence[int]) -> Iterator["Box"]:
        """Tile the box with chunk_shape boxes (the last ones clipped), z-major."""
        return (block.write for block in self.blocks(chunk_shape))

    def blocks(self, write_shape: Sequence[int], context: Sequence[int] | int = 0,
               context_high: Sequence[int] | int | None = None, clip: bool = True) -> list["Block"]:
        """Blocks whose write boxes tile this box (the last ones clipped), z-major.

        Each reads its write box grown by `context` before and `context_high` (default: `context`)
        after, clipped to this box. With `clip=False` every read box has the same shape, write_shape
        plus both contexts, placed at the write box's start (daisy's "overhang"): for a network with
        a fixed input, whose reader pads what lies outside the volume.
        """
        write_shape = Coordinate(write_shape)
        if any(w <= 0 for w in write_shape):
            raise InputError(f"block size must be positive, got {tuple(write_shape)}")
        counts = self.shape.ceil_div(write_shape)
        result = []
        for index, corner in enumerate(np.ndindex(*counts)):
            start = self.start + write_shape * corner
            write = Box(start, (start + write_shape).minimum(self.stop))
            if clip:
                read = write.grow(context, context_high).intersect(self)
            else:
                read = Box(start, start + write_shape).grow(context, context_high)
            result.append(Block(index, write, read))
        return result

    def __str__(self) -> str:
        return ",".join(str(v) for v in (*self.start, *self.stop))


@dataclass(frozen=True)
class Block:
    """One unit of blockwise work: it reads `read` (its write box plus context) and writes `write`."""

    index: int
    write: Box
    read: Box

    def write_within_read(self) -> tuple[slice, slice, slice]:
        """Where the write box lies in an array holding the read box."""
        return self.write.slices(relative_to=self.read.start)


def voxel_to_nm(zyx: Sequence[float], resolution_nm: Sequence[float], offset_nm: Sequence[float] = (0, 0, 0),
                at: str = CORNER) -> np.ndarray:
    """Voxel index (z, y, x; fractional allowed) to physical position in nm: its corner, or its centre with at=CENTRE."""
    if at not in (CORNER, CENTRE):
        raise ValueError(f"at must be {CORNER!r} or {CENTRE!r}, not {at!r}")
    voxel = np.asarray(zyx, dtype=np.float64) + (0.5 if at == CENTRE else 0.0)
    return voxel * np.asarray(resolution_nm, dtype=np.float64) + np.asarray(offset_nm, dtype=np.float64)


def nm_to_voxel(position_nm: Sequence[float], resolution_nm: Sequence[float], offset_nm: Sequence[float] = (0, 0, 0)) -> np.ndarray:
    """Physical position in nm to the (z, y, x) index of the voxel containing it."""
    return np.floor((np.asarray(position_nm, dtype=np.float64) - np.asarray(offset_nm, dtype=np.float64)) / np.asarray(resolution_nm, dtype=np.float64)).astype(np.int64)
