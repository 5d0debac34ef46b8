"""Running the network on batches of FOVs: precision, memory layout, device, determinism.

fp32 is the reference path (deterministic kernels, no TF32); bf16 autocast works on
CPU and GPU, fp16 on GPU. Channels-last 3D lets oneDNN/cuDNN pick faster kernels.
"""
from __future__ import annotations

import numpy as np
import torch

from ffn.model import ConvStack3DFFN
from volumes.errors import InputError


class ForwardRunner:
    """Callable `(images, seeds) -> logits` over (B, z, y, x) float32 arrays."""

    def __init__(self, model: ConvStack3DFFN, precision: str = "fp32", channels_last: bool = True,
                 device: str | torch.device | None = None, compile: bool = False):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if precision == "fp16" and self.device.type != "cuda":
            raise InputError("fp16 inference needs a GPU; use bf16 or fp32 on CPU")
        self.precision = precision
        self.memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        if precision == "fp32" and self.device.type == "cuda":
            # CPU (oneDNN) convolutions are already deterministic; on GPU pick deterministic, non-TF32 kernels
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.model = model.to(self.device).eval().to(memory_format=self.memory_format)
        self.forward = torch.compile(self.model) if compile else self.model
        self.steps = 0

    def __call__(self, images: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        batch = np.stack([images, seeds], axis=1)  # (B, 2, z, y, x)
        x = torch.from_numpy(batch).to(self.device).contiguous(memory_format=self.memory_format)
        with torch.inference_mode():
            if self.precision == "fp32":
                out = self.forward(x)
            else:
                dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
                with torch.autocast(self.device.type, dtype=dtype):
                    out = self.forward(x)
        self.steps += len(images)
        return out[:, 0].float().cpu().numpy()
