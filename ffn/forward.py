"""Running the network on batches of FOVs: precision, memory layout, device, determinism.

fp32 is the reference path (deterministic kernels, no TF32); bf16 autocast works on
CPU and GPU; fp16 autocast and tf32 (fp32 tensors, TensorFloat-32 convolutions) on GPU
only. Channels-last 3D lets oneDNN/cuDNN pick faster kernels. `compile` runs the network
through TorchInductor with frozen weights, which fuses each convolution with the ReLU or
residual add after it (on CPU, oneDNN post-ops): fewer passes over the activations, same
numbers as the eager path. `views` averages the network's output over flipped and y/x-transposed
copies of each FOV (the symmetries training's augmentation teaches): a weak network's errors
partly cancel, at `views` times the compute.
"""
from __future__ import annotations

import contextlib
import os
import shutil

import numpy as np
import torch
from torch import nn

from ffn.model import ConvStack3DFFN
from ffn.options import VIEW_COUNTS
from volumes.errors import InputError


@contextlib.contextmanager
def cuda_numerics(precision: str | None):
    """cuDNN settings for one forward pass, restored afterwards.

    fp32 asks for deterministic, non-TF32 kernels (CPU oneDNN convolutions already are);
    tf32 allows TensorFloat-32. They are process-wide switches, so they are set per call
    and put back: a validation pass must not slow down the training it interrupts.
    """
    if precision is None:
        yield
        return
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32)
    torch.use_deterministic_algorithms(precision == "fp32", warn_only=True)
    if precision == "fp32":
        torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = saved[2], saved[3]


# (flipped axes of an (N, C, z, y, x) tensor, y and x transposed), in the order views are added. Each flip
# treats y and x alike, so it commutes with the transpose and every view is its own inverse; the first 2, 4
# and 8 are each closed under composition, so their average is equivariant under them.
SYMMETRIC_VIEWS = (((), False), ((2, 3, 4), True), ((), True), ((2, 3, 4), False),
                   ((2,), False), ((3, 4), True), ((2,), True), ((3, 4), False))


class ViewAveraged(nn.Module):
    """The network's output averaged over the first `views` of SYMMETRIC_VIEWS, all in one batch."""

    def __init__(self, model: ConvStack3DFFN, views: int):
        super().__init__()
        if views not in VIEW_COUNTS:
            raise InputError(f"views must be one of {VIEW_COUNTS}, got {views}")
        fov_zyx = model.config.fov_size
        if views > 1 and fov_zyx[1] != fov_zyx[2]:
            raise InputError(f"averaging views transposes y and x, so the FOV's y and x sizes must agree, got {fov_zyx}")
        self.model, self.config, self.views = model, model.config, SYMMETRIC_VIEWS[:views]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = torch.cat([_view(x, flips, transpose) for flips, transpose in self.views])
        outputs = self.model(batch).split(len(x))
        restored = [_view(out, flips, transpose) for out, (flips, transpose) in zip(outputs, self.views)]  # self-inverse
        return torch.stack(restored).mean(dim=0)


def _view(x: torch.Tensor, flips: tuple[int, ...], transpose: bool) -> torch.Tensor:
    x = x.transpose(3, 4) if transpose else x
    return torch.flip(x, flips) if flips else x


class ForwardRunner:
    """Callable `(images, seeds) -> logits` over (B, z, y, x) float32 arrays."""

    def __init__(self, model: ConvStack3DFFN, precision: str = "fp32", channels_last: bool = True,
                 device: str | torch.device | None = None, compile: bool = False, batch_size: int = 1,
                 views: int = 1):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if precision in ("fp16", "tf32") and self.device.type != "cuda":
            raise InputError(f"{precision} inference needs a GPU; use bf16 or fp32 on CPU")
        if compile and self.device.type == "cpu" and shutil.which(os.environ.get("CXX", "g++")) is None:
            raise InputError("compiled inference on CPU needs a C++ compiler (g++); install one or turn compile off")
        self.precision = precision
        self.memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        model = ViewAveraged(model, views) if views != 1 else model
        self.model = model.to(self.device).eval().to(memory_format=self.memory_format)
        self.compiled = compile
        # a compiled graph is specialised to one batch size: smaller batches are padded up to it,
        # larger ones run in pieces of it
        self.batch_size = max(1, int(batch_size))
        self.forward = torch.compile(self.model, dynamic=False) if compile else self.model
        self.steps = 0

    @classmethod
    def for_options(cls, model: ConvStack3DFFN, options) -> "ForwardRunner":
        """The runner an InferenceOptions asks for (precision, layout, compilation, batch, views)."""
        return cls(model, options.precision, options.channels_last, compile=options.compile,
                   batch_size=options.batch_size, views=options.averaged_views)

    def __call__(self, images: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        count = len(images)
        if self.compiled and count > self.batch_size:
            size = self.batch_size
            return np.concatenate([self(images[i:i + size], seeds[i:i + size]) for i in range(0, count, size)])
        batch = np.stack([images, seeds], axis=1)  # (B, 2, z, y, x)
        if self.compiled and count < self.batch_size:
            batch = np.concatenate([batch, np.zeros((self.batch_size - count, *batch.shape[1:]), batch.dtype)])
        x = torch.from_numpy(batch).to(self.device).contiguous(memory_format=self.memory_format)
        with cuda_numerics(self.precision if self.device.type == "cuda" else None), torch.inference_mode():
            if self.precision in ("fp32", "tf32"):
                out = self._network(x)
            else:
                dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
                with torch.autocast(self.device.type, dtype=dtype):
                    out = self._network(x)
        self.steps += count
        return out[:count, 0].float().cpu().numpy()

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        if not self.compiled:
            return self.forward(x)
        import torch._inductor.config as inductor_config

        # Frozen weights let Inductor fold them into fused convolution kernels; set per call
        # (compilation happens lazily, on the first call) rather than process-wide.
        with inductor_config.patch(freezing=True):
            return self.forward(x)
