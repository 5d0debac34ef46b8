"""Training the synapse detector: sampled, augmented patches; validation on a held-out slab; checkpoints.

The last `validation_fraction` of the x axis is never trained on. Every
`checkpoint_every` iterations the model is scored there; the best one by validation
loss is kept, and the detection threshold and minimum site size are then chosen on
that slab (site F1 at 200 nm) when it holds at least 3 sites. A checkpoint file beside
the output lets an interrupted run resume.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from synapses.data import (GroundTruth, Region, load_ground_truth, normalize_image, open_image, parse_sections,
                           working_scale)
from synapses.detection import Prediction, extract_sites, predict_blocks
from synapses.evaluation import site_scores
from synapses.model import NetworkConfig, SynapseModel, SynapseUNet, pooling_for_resolution
from volumes.errors import InputError
from volumes.geometry import Box
from volumes.atomic import atomic_path

POLARITY_LOSS_WEIGHT = 1.0


@dataclass
class TrainingOptions:
    iterations: int = 2000
    batch_size: int = 4
    patch_shape: tuple[int, int, int] | None = None  # working voxels; None: chosen from the resolution
    learning_rate: float = 2e-3
    downsample: tuple[int, int, int] = (1, 1, 1)  # source voxels averaged into one working voxel, z, y, x
    # or: the working voxel size itself (z, y, x nm), any ratio to the image's within 8x (resampled); wins over downsample
    working_resolution_nm: tuple[float, float, float] | None = None
    widths: tuple[int, ...] = (8, 16, 32)
    validation_fraction: float = 0.15
    checkpoint_every: int = 100
    positive_fraction: float = 0.8
    seed: int = 0
    device: str = "auto"
    initial_model: str | None = None  # start from this model's weights (same widths and resolution)


def choose_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no GPU is available")
    return requested


def train(image_spec: str, synapses_spec: str, resolution_nm: Sequence[float] | None, sections: str | None,
          out: str | Path, options: TrainingOptions, progress: bool = True) -> SynapseModel:
    """Train a detector on the given sections and write it to `out` (atomically)."""
    device = choose_device(options.device)
    volume = open_image(image_spec, resolution_nm)
    scale = (working_scale(volume.resolution_nm, options.working_resolution_nm) if options.working_resolution_nm
             else tuple(float(f) for f in options.downsample))
    region = Region(volume, parse_sections(sections, volume.shape[0], "--train-sections"), scale)
    if any(s < 1 for s in region.working_shape):
        raise InputError(f"{image_spec}: too small for a working resolution of {region.working_resolution_nm} nm")
    truth = load_ground_truth(synapses_spec, region, resolution_nm)
    if not truth.site_mask.any():
        raise InputError(f"{synapses_spec}: no synaptic sites in the training sections; nothing to learn from")
    image = normalize_image(region.read_working())
    config = NetworkConfig(widths=list(options.widths), pooling=pooling_for_resolution(region.working_resolution_nm, len(options.widths)))
    patch = _patch_shape(options.patch_shape, region, config)
    cut = _validation_cut(region.working_shape[2], patch[2], options.validation_fraction)
    torch.manual_seed(options.seed)
    network = SynapseUNet(config).to(device)
    if options.initial_model:
        _load_initial_weights(network, options.initial_model, region, device)
    optimizer = torch.optim.Adam(network.parameters(), lr=options.learning_rate)
    has_polarity = truth.polarity is not None
    signature = {"image": str(image_spec), "synapses": str(synapses_spec), "sections": region.z_range,
                 "options": asdict(options), "patch": patch}
    checkpoint_path = Path(str(out) + ".checkpoint")
    state = _resume(checkpoint_path, signature, network, optimizer, device)
    rng = np.random.default_rng(options.seed + state["iteration"])
    positive_weight = torch.tensor(_positive_weight(truth.site_mask[..., :cut]), device=device)
    bar = tqdm(total=options.iterations, initial=state["iteration"], desc="training synapse detector", unit="it", disable=not progress)
    network.train()
    while state["iteration"] < options.iterations:
        images, sites, polarities = _sample_batch(rng, image[..., :cut], truth, cut, patch, options, region)
        output = network(torch.from_numpy(images).to(device))
        loss = nn.functional.binary_cross_entropy_with_logits(output[:, 0], torch.from_numpy(sites).to(device), pos_weight=positive_weight)
        if has_polarity:
            target = torch.from_numpy(polarities).to(device)
            known = (target >= 0).float()
            polarity_loss = nn.functional.binary_cross_entropy_with_logits(output[:, 1], target.clamp(min=0), reduction="none")
            loss = loss + POLARITY_LOSS_WEIGHT * (polarity_loss * known).sum() / known.sum().clamp(min=1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        state["iteration"] += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", best_validation=f"{state['best_loss']:.3f}")
        if state["iteration"] % options.checkpoint_every == 0 or state["iteration"] == options.iterations:
            validation_loss = _validation_loss(network, image, truth, cut, device, positive_weight)
            if validation_loss <= state["best_loss"]:
                state["best_loss"], state["best_state"] = validation_loss, copy.deepcopy(network.state_dict())
            _save_checkpoint(checkpoint_path, signature, network, optimizer, state)
            network.train()
    bar.close()
    network.load_state_dict(state["best_state"] or network.state_dict())
    network.eval()
    model = SynapseModel(network, region.working_resolution_nm, has_polarity, min_size_voxels=_default_min_size(region))
    model.training = {
        "image": str(image_spec), "synapses": str(synapses_spec), "sections": list(region.z_range),
        "source_resolution_nm": list(volume.resolution_nm), "iterations": options.iterations,
        "patch_shape": list(patch), "validation_x_from": cut, "best_validation_loss": state["best_loss"],
        "device": device,
    }
    _calibrate(model, image, truth, region, cut, device)
    model.save(out)
    checkpoint_path.unlink(missing_ok=True)
    return model


def _load_initial_weights(network: SynapseUNet, path: str, region: Region, device: str) -> None:
    from synapses.model import load_model

    initial = load_model(path, device)
    if tuple(initial.resolution_nm) != tuple(region.working_resolution_nm) or initial.network.config != network.config:
        raise InputError(f"{path}: its resolution {initial.resolution_nm} nm or layers differ from this training run "
                         f"({region.working_resolution_nm} nm, widths {network.config.widths}); it cannot be the starting point")
    network.load_state_dict(initial.network.state_dict())


def _patch_shape(requested, region: Region, config: NetworkConfig) -> tuple[int, int, int]:
    """A patch that fits the training volume and divides by the network's pooling."""
    pooling = config.total_pooling
    resolution = np.asarray(region.working_resolution_nm)
    if requested is None:
        requested = tuple(32 if r < 1.5 * resolution.min() else 8 for r in resolution)
    shape = region.working_shape
    limit = (shape[0], shape[1], max(1, int(shape[2] * 0.85)))
    patch = tuple(max(p, min(r, l) // p * p) for r, l, p in zip(requested, limit, pooling))
    if any(p > s for p, s in zip(patch, shape)):
        raise InputError(f"the training volume {shape} (working voxels) is smaller than the network's smallest patch {patch}")
    return patch


def _validation_cut(width: int, patch_x: int, fraction: float) -> int:
    """First x of the validation slab; the rest must still hold a training patch."""
    cut = int(round(width * (1.0 - fraction)))
    return max(patch_x, min(cut, width))


def _positive_weight(mask: np.ndarray) -> float:
    positives = float(mask.sum())
    return float(np.clip((mask.size - positives) / max(positives, 1.0), 1.0, 10.0))


def _default_min_size(region: Region) -> int:
    """Voxels in a ball of 30 nm radius: smaller components are noise."""
    return max(2, int((4.0 / 3.0) * np.pi * 30.0**3 / float(np.prod(region.working_resolution_nm))))


def _sample_batch(rng, image, truth: GroundTruth, cut: int, patch, options: TrainingOptions, region: Region):
    """A batch of augmented patches, most centred near a site (rejection sampling)."""
    shape = image.shape
    positives = np.argwhere(truth.site_mask[..., :cut])
    images, sites, polarities = [], [], []
    for _ in range(options.batch_size):
        if len(positives) and rng.random() < options.positive_fraction:
            center = positives[rng.integers(len(positives))]
            start = [int(np.clip(c - rng.integers(0, p), 0, s - p)) for c, p, s in zip(center, patch, shape)]
        else:
            start = [int(rng.integers(0, s - p + 1)) for s, p in zip(shape, patch)]
        box = Box.from_shape(patch, start).slices()
        polarity = truth.polarity[box] if truth.polarity is not None else np.full(tuple(patch), -1.0, np.float32)
        patch_image, patch_site, patch_polarity = _augment(rng, image[box], truth.site_mask[box], polarity, region)
        images.append(patch_image)
        sites.append(patch_site)
        polarities.append(patch_polarity)
    return (np.stack(images)[:, None].astype(np.float32), np.stack(sites).astype(np.float32), np.stack(polarities).astype(np.float32))


def _augment(rng, image, site, polarity, region: Region):
    """Flips, an x/y swap when the pixels are square, contrast and noise (targets move with the image)."""
    for axis in range(3):
        if rng.random() < 0.5:
            image, site, polarity = np.flip(image, axis), np.flip(site, axis), np.flip(polarity, axis)
    resolution = region.working_resolution_nm
    if abs(resolution[1] - resolution[2]) < 1e-6 and image.shape[1] == image.shape[2] and rng.random() < 0.5:
        image, site, polarity = image.transpose(0, 2, 1), site.transpose(0, 2, 1), polarity.transpose(0, 2, 1)
    image = image * rng.uniform(0.8, 1.2) + rng.uniform(-0.2, 0.2) + rng.normal(0, rng.uniform(0, 0.15), image.shape)
    return np.ascontiguousarray(image), np.ascontiguousarray(site), np.ascontiguousarray(polarity)


def _validation_prediction(network, image, cut: int, device: str) -> Prediction | None:
    if cut >= image.shape[2]:
        return None
    slab = image[..., cut:]
    return predict_blocks(network, lambda box: slab[box.slices()], slab.shape, block_shape=slab.shape, batch_size=1, device=device)


def _validation_loss(network, image, truth: GroundTruth, cut: int, device: str, positive_weight) -> float:
    """Site loss on the held-out slab (the training loss when there is no slab)."""
    network.eval()
    if cut >= image.shape[2]:
        return 0.0
    prediction = _validation_prediction(network, image, cut, device)
    probability = np.clip(prediction.probability.astype(np.float64) / 255.0, 1e-4, 1 - 1e-4)
    target = truth.site_mask[..., cut:]
    weight = float(positive_weight)
    loss = -(weight * target * np.log(probability) + (1 - target) * np.log(1 - probability))
    return float(loss.mean())


def _calibrate(model: SynapseModel, image, truth: GroundTruth, region: Region, cut: int, device: str) -> None:
    """Pick threshold and minimum size on the validation slab by site F1 at 200 nm (kept when it has < 3 sites)."""
    low_x_nm = region.working_voxel_to_nm((0, 0, cut))[2] - region.working_resolution_nm[2] / 2
    held_out = truth.sites_nm[truth.sites_nm[:, 2] >= low_x_nm] if len(truth.sites_nm) else truth.sites_nm
    if len(held_out) < 3:
        return
    prediction = _validation_prediction(model.network, image, cut, device)
    slab_region = Region(region.volume, region.z_range, region.scale)
    best = None
    for threshold in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        for size_factor in (1, 2, 4, 8, 16):
            sites = extract_sites(prediction, slab_region, threshold, model.min_size_voxels * size_factor)
            positions = np.array([s.position_nm for s in sites]).reshape(-1, 3)
            positions[:, 2] += cut * region.working_resolution_nm[2]
            f1 = site_scores(positions, held_out)["f1_200nm"]
            if best is None or f1 > best[0]:
                best = (f1, threshold, model.min_size_voxels * size_factor)
    model.threshold, model.min_size_voxels = best[1], best[2]
    model.training["validation_site_f1_200nm"] = best[0]
    model.training["validation_sites"] = len(held_out)


def _resume(path: Path, signature: dict, network, optimizer, device: str) -> dict:
    fresh = {"iteration": 0, "best_loss": float("inf"), "best_state": None}
    if not path.is_file():
        return fresh
    saved = torch.load(path, map_location=device, weights_only=False)
    if saved.get("signature") != signature:
        return fresh  # another run's checkpoint: start over
    network.load_state_dict(saved["network"])
    optimizer.load_state_dict(saved["optimizer"])
    return saved["state"]


def _save_checkpoint(path: Path, signature: dict, network, optimizer, state: dict) -> None:
    with atomic_path(path) as temporary:
        torch.save({"signature": signature, "network": network.state_dict(), "optimizer": optimizer.state_dict(),
                    "state": state}, temporary)
