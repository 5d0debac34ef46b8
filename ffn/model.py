"""The convstack 3D FFN network and its self-describing model file.

The network follows google/ffn `convstack_3d`: the input is two channels (the
normalised image and the seed in logit space), a stack of 3x3x3 convolutions in
residual modules, a 1x1x1 head, and the head's output is *added* to the input
seed, so the network predicts an update in logit space.

A model file (`torch.save` of a dict) holds the weights, the `FFNConfig` and the
image normalisation, so inference and training need nothing else.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from volumes.errors import InputError, reason
from volumes.atomic import atomic_path

MODEL_FILE_FORMAT = "connectome-ffn-model-v1"


@dataclass
class FFNConfig:
    """Everything needed to rebuild and feed a network; sizes are z, y, x."""

    depth: int = 12
    features: int = 32
    fov_size: tuple[int, int, int] = (33, 33, 33)
    deltas: tuple[int, int, int] = (8, 8, 8)
    image_mean: float = 128.0
    image_stddev: float = 33.0
    use_layernorm: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.fov_size = tuple(int(v) for v in self.fov_size)
        self.deltas = tuple(int(v) for v in self.deltas)
        if self.depth < 1 or self.features < 1:
            raise InputError(f"FFN depth and features must be positive, got depth {self.depth}, features {self.features}")
        if len(self.fov_size) != 3 or any(v < 1 or v % 2 == 0 for v in self.fov_size):
            raise InputError(f"FFN fov_size must be three odd positive sizes z,y,x, got {self.fov_size}")
        if len(self.deltas) != 3 or any(v < 0 for v in self.deltas):
            raise InputError(f"FFN deltas must be three non-negative steps z,y,x, got {self.deltas}")
        if self.image_stddev <= 0:
            raise InputError(f"image_stddev must be positive, got {self.image_stddev}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["fov_size"] = list(self.fov_size)
        data["deltas"] = list(self.deltas)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "FFNConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown FFN config field(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def flops_per_step(self) -> float:
        """Multiply-adds x2 of one forward pass over one FOV (convs only)."""
        voxels = float(np.prod(self.fov_size))
        first = 2 * self.features * 27
        body = (2 * self.depth - 1) * self.features * self.features * 27
        head = self.features
        return 2.0 * voxels * (first + body + head)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the feature channels at every voxel (as flax's LayerNorm on NDHWC)."""

    def __init__(self, features: int):
        super().__init__()
        self.norm = nn.LayerNorm(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


class ResidualModule(nn.Module):
    """ReLU -> conv -> ReLU -> conv, plus the identity skip."""

    def __init__(self, features: int, use_layernorm: bool):
        super().__init__()
        self.norm = ChannelLayerNorm(features) if use_layernorm else nn.Identity()
        self.conv_a = nn.Conv3d(features, features, 3, padding=1)
        self.conv_b = nn.Conv3d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm(x))
        y = torch.relu(self.conv_a(y))
        return x + self.conv_b(y)


class ConvStack3DFFN(nn.Module):
    """Google's convstack_3d FFN; input (N, 2, Z, Y, X) = [image, seed logits], output logits (N, 1, Z, Y, X)."""

    def __init__(self, config: FFNConfig):
        super().__init__()
        self.config = config
        f = config.features
        self.conv0_a = nn.Conv3d(2, f, 3, padding=1)
        self.conv0_b = nn.Conv3d(f, f, 3, padding=1)
        self.modules_list = nn.ModuleList(ResidualModule(f, config.use_layernorm) for _ in range(config.depth - 1))
        self.head_norm = ChannelLayerNorm(f) if config.use_layernorm else nn.Identity()
        self.conv_lom = nn.Conv3d(f, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seed = x[:, 1:2]
        net = self.conv0_b(torch.relu(self.conv0_a(x)))
        for module in self.modules_list:
            net = module(net)
        net = self.conv_lom(torch.relu(self.head_norm(net)))
        return seed + net.to(seed.dtype)


def build_model(config: FFNConfig, seed: int | None = None) -> ConvStack3DFFN:
    """A freshly initialised network (truncated normal, stddev 0.01, zero biases, as Google's).

    With `seed` the weights depend on it alone, not on whatever drew from torch's global generator before.
    """
    model = ConvStack3DFFN(config)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.trunc_normal_(module.weight, std=0.01, a=-0.02, b=0.02, generator=generator)
                nn.init.zeros_(module.bias)
    return model


def save_model(path: str | Path, module: ConvStack3DFFN, config: FFNConfig) -> None:
    """Write weights + config atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in module.state_dict().items()}
    payload = {"format": MODEL_FILE_FORMAT, "config": config.to_dict(), "state_dict": state}
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[ConvStack3DFFN, FFNConfig]:
    """Read a model file written by `save_model`; returns the network in eval mode and its config."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path} is not a readable FFN model file ({reason(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FILE_FORMAT:
        raise InputError(f"{path} is not a connectome FFN model file")
    config = FFNConfig.from_dict(payload["config"])
    model = ConvStack3DFFN(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise InputError(f"{path}: weights do not fit the stored config: {first[1].strip() if len(first) > 1 else first[0]}") from None
    return model.to(device).eval(), config
