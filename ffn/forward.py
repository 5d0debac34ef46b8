"""Running the network on batches of FOVs: precision, memory layout, device, determinism.

fp32 is the reference path (deterministic kernels, no TF32); bf16 autocast works on
CPU and GPU; fp16 autocast and tf32 (fp32 tensors, TensorFloat-32 convolutions) on GPU
only. Channels-last 3D lets oneDNN/cuDNN pick faster kernels.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from ffn.model import ConvStack3DFFN
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


class ForwardRunner:
    """Callable `(images, seeds) -> logits` over (B, z, y, x) float32 arrays."""

    def __init__(self, model: ConvStack3DFFN, precision: str = "fp32", channels_last: bool = True,
                 device: str | torch.device | None = None, compile: bool = False):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if precision in ("fp16", "tf32") and self.device.type != "cuda":
            raise InputError(f"{precision} inference needs a GPU; use bf16 or fp32 on CPU")
        self.precision = precision
        self.memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        self.model = model.to(self.device).eval().to(memory_format=self.memory_format)
        self.forward = torch.compile(self.model) if compile else self.model
        self.steps = 0

    def __call__(self, images: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        batch = np.stack([images, seeds], axis=1)  # (B, 2, z, y, x)
        x = torch.from_numpy(batch).to(self.device).contiguous(memory_format=self.memory_format)
        with cuda_numerics(self.precision if self.device.type == "cuda" else None), torch.inference_mode():
            if self.precision in ("fp32", "tf32"):
                out = self.forward(x)
            else:
                dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
                with torch.autocast(self.device.type, dtype=dtype):
                    out = self.forward(x)
        self.steps += len(images)
        return out[:, 0].float().cpu().numpy()
