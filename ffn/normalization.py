"""How an image is brought to the intensities an FFN expects: the model's own mean/stddev, the volume's, or CLAHE.

Google's networks see (image - mean) / stddev with the mean and stddev fixed when the model was
made (128/33 for FIB-25). EM from another microscope or another stain has other statistics, and
the network then floods (one segment over most of the volume). `volume` uses the image's own
mean and standard deviation, sampled blockwise so a large volume is never read whole for it;
`clahe` first equalises local contrast (scikit-image's CLAHE, block by block with overlap so block
borders do not show) and then uses the statistics of the result.

`prepare_image` returns the image, the model config with the mean/stddev to use, and a record of
what was done for the run's metadata (run.json).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from tqdm import tqdm

from ffn.model import FFNConfig
from ffn.options import check_normalization
from volumes.errors import InputError
from volumes.geometry import Box

SAMPLE_BLOCK_ZYX = (32, 128, 128)
MAX_SAMPLE_BLOCKS = 64  # spread evenly over the volume: ~64 M voxels read at most for the statistics
CLAHE_BLOCK_ZYX = (64, 256, 256)
CLAHE_KERNEL_ZYX = (16, 64, 64)  # the neighbourhood CLAHE equalises over
CLAHE_CONTEXT_ZYX = CLAHE_KERNEL_ZYX  # read around each block so its borders see their neighbours
CLAHE_CLIP_LIMIT = 0.01  # scikit-image's default

Reader = Callable[[Box], np.ndarray]


def image_statistics(read: Reader, box: Box) -> tuple[float, float]:
    """Mean and standard deviation of the image in `box`, from at most MAX_SAMPLE_BLOCKS blocks spread over it."""
    blocks = box.blocks(SAMPLE_BLOCK_ZYX)
    chosen = blocks if len(blocks) <= MAX_SAMPLE_BLOCKS else \
        [blocks[i] for i in np.linspace(0, len(blocks) - 1, MAX_SAMPLE_BLOCKS).round().astype(int)]
    count, total, squares = 0, 0.0, 0.0
    for block in chosen:
        data = np.asarray(read(block.write), dtype=np.float64)
        count, total, squares = count + data.size, total + data.sum(), squares + np.square(data).sum()
    mean = total / count
    stddev = float(np.sqrt(max(squares / count - mean * mean, 0.0)))
    if stddev < 1e-6:
        raise InputError("the image is constant (standard deviation 0): it cannot be normalised by its own statistics")
    return float(mean), stddev


def clahe(read: Reader, box: Box, progress: bool = False) -> np.ndarray:
    """CLAHE of the image in `box` as uint8, computed block by block (each with CLAHE_CONTEXT_ZYX of context)."""
    from skimage.exposure import equalize_adapthist

    out = np.zeros(box.shape, dtype=np.uint8)
    blocks = box.blocks(CLAHE_BLOCK_ZYX, CLAHE_CONTEXT_ZYX)
    for block in tqdm(blocks, desc="clahe", unit="block", disable=not progress):
        data = np.asarray(read(block.read), dtype=np.float64)
        low, high = data.min(), data.max()
        scaled = (data - low) / (high - low) if high > low else np.zeros_like(data)
        kernel = tuple(min(k, s) for k, s in zip(CLAHE_KERNEL_ZYX, data.shape))
        equalised = equalize_adapthist(scaled, kernel_size=kernel, clip_limit=CLAHE_CLIP_LIMIT)
        out[block.write.slices(box.start)] = np.rint(equalised[block.write_within_read()] * 255.0)
    return out


def prepare_image(read: Reader, box: Box, config: FFNConfig, method: str, statistics_box: Box | None = None,
                  progress: bool = False) -> tuple[np.ndarray, FFNConfig, dict]:
    """(image of `box`, config whose image_mean/image_stddev normalise it, record of the normalisation).

    `volume` takes its statistics over `statistics_box` (default `box`): the whole image when a run
    segments a box of it, since contrast is a property of the dataset, and a box of it should be seen
    as a whole-volume run would see it.
    """
    check_normalization(method)
    if method == "clahe":
        image = clahe(read, box, progress)
        mean, stddev = image_statistics(lambda b: image[b.slices(box.start)], box)
    else:
        image = np.asarray(read(box))
        mean, stddev = (config.image_mean, config.image_stddev) if method == "model" else \
            image_statistics(read, statistics_box or box)
    used = dataclasses.replace(config, image_mean=float(mean), image_stddev=float(stddev))
    return image, used, {"method": method, "image_mean": round(float(mean), 6), "image_stddev": round(float(stddev), 6)}
