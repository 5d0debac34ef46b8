"""The synapse detector network and its model file.

A small 3-D U-Net whose pooling follows the voxel shape: a level pools z only once the
voxel is about as fine in z as in y, x (so 50 x 18 nm sections pool in-plane first).
Outputs, per voxel: a synaptic-site logit and a polarity logit (is this voxel on the
presynaptic side of a nearby synapse, rather than the postsynaptic side). Polarity is a
local question (vesicles around me, or across the cleft) and so is learned much sooner
than a direction vector; it orders the two partner segments.

The model file (torch.save of a dict) records the working resolution it was trained at;
detection refuses an image it cannot bring to that resolution.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from volumes.errors import InputError, reason
from volumes.atomic import atomic_path

MODEL_FORMAT = "connectome-synapse-unet-v2"


@dataclass
class NetworkConfig:
    """Layer widths and the (z, y, x) pooling factor below each level."""

    widths: list[int] = field(default_factory=lambda: [16, 32, 64])
    pooling: list[list[int]] = field(default_factory=lambda: [[1, 2, 2], [2, 2, 2]])

    @property
    def total_pooling(self) -> tuple[int, int, int]:
        factor = [1, 1, 1]
        for step in self.pooling:
            factor = [a * b for a, b in zip(factor, step)]
        return tuple(factor)


def pooling_for_resolution(resolution_nm: Sequence[float], levels: int) -> list[list[int]]:
    """Pool an axis only while its voxel is less than ~1.5x as coarse as the finest one."""
    current = [float(r) for r in resolution_nm]
    steps = []
    for _ in range(levels - 1):
        finest = min(current)
        step = [2 if r < 1.5 * finest else 1 for r in current]
        steps.append(step)
        current = [r * s for r, s in zip(current, step)]
    return steps


def _conv_block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(channels_in, channels_out, kernel_size=3, padding=1),
        nn.GroupNorm(4, channels_out),
        nn.ReLU(inplace=True),
        nn.Conv3d(channels_out, channels_out, kernel_size=3, padding=1),
        nn.GroupNorm(4, channels_out),
        nn.ReLU(inplace=True),
    )


class SynapseUNet(nn.Module):
    """3-D U-Net: image (N, 1, Z, Y, X) -> site and polarity logits, (N, 2, Z, Y, X)."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config = config
        widths = config.widths
        self.down = nn.ModuleList()
        channels = 1
        for width in widths:
            self.down.append(_conv_block(channels, width))
            channels = width
        self.pools = nn.ModuleList(nn.MaxPool3d(tuple(step)) for step in config.pooling)
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for level in range(len(widths) - 1, 0, -1):
            step = tuple(config.pooling[level - 1])
            self.ups.append(nn.ConvTranspose3d(widths[level], widths[level - 1], kernel_size=step, stride=step))
            self.up_blocks.append(_conv_block(2 * widths[level - 1], widths[level - 1]))
        self.head = nn.Conv3d(widths[0], 2, kernel_size=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        skips = []
        features = image
        for level, block in enumerate(self.down):
            features = block(features)
            if level < len(self.pools):
                skips.append(features)
                features = self.pools[level](features)
        for up, block in zip(self.ups, self.up_blocks):
            features = up(features)
            features = block(torch.cat([skips.pop(), features], dim=1))
        return self.head(features)


@dataclass
class SynapseModel:
    """A trained detector with what detection needs to use it correctly."""

    network: SynapseUNet
    resolution_nm: tuple[float, float, float]
    has_polarity: bool
    threshold: float = 0.5
    min_size_voxels: int = 4
    training: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": MODEL_FORMAT,
            "network_config": asdict(self.network.config),
            "state_dict": self.network.state_dict(),
            "resolution_nm": list(self.resolution_nm),
            "has_polarity": self.has_polarity,
            "threshold": self.threshold,
            "min_size_voxels": self.min_size_voxels,
            "training": self.training,
        }
        with atomic_path(path) as temporary:
            torch.save(payload, temporary)
        return path


def load_model(path: str | Path, device: str = "cpu") -> SynapseModel:
    """Read a model file written by `SynapseModel.save`, or raise a one-line InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    try:
        # weights_only: a model file holds tensors and plain values, so loading one never runs code from it
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise InputError(f"{path}: not a synapse model file ({reason(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise InputError(f"{path}: not a synapse model file (expected format {MODEL_FORMAT})")
    network = SynapseUNet(NetworkConfig(**payload["network_config"]))
    network.load_state_dict(payload["state_dict"])
    network.to(device).eval()
    return SynapseModel(
        network=network,
        resolution_nm=tuple(float(r) for r in payload["resolution_nm"]),
        has_polarity=bool(payload["has_polarity"]),
        threshold=float(payload["threshold"]),
        min_size_voxels=int(payload["min_size_voxels"]),
        training=dict(payload.get("training", {})),
    )
