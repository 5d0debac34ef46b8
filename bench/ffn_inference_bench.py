"""FFN inference throughput on the FIB-25 100^3 crop at (75, 75, 75), Google's FIB-25 checkpoint and settings.

Per-step timings of the same network, measured in this run on the same FOVs:
  (a) TensorFlow's forward pass (tf.nn.conv3d, NDHWC, fp32) -- the baseline Google's code runs;
      needs `tensorflow-cpu` (bench-only); skipped with a note when it is missing;
  (b) a naive PyTorch loop: one canvas, fp32, default (channels-first) layout;
  ours: fp32 channels-last, batch 1 and batch B (several canvases per forward pass), the same
  compiled (TorchInductor, frozen weights: convolutions fused with their ReLU / residual add), bf16.
Then the whole crop is segmented with our fp32 path (voxels/s, s/step, GFLOP/s) and,
with --fast-segmentation, with the compiled path and each reduced precision too (VOI against
the fp32 result): bf16 on CPU (when native or --bf16); tf32, fp16 and bf16 on a GPU.

Usage: .venv/bin/python bench/ffn_inference_bench.py [--rounds 5] [--threads 2] [--batch 4] [--no-segmentation]
       [--fast-segmentation] [--bf16]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ffn.forward import ForwardRunner  # noqa: E402
from ffn.inference import Canvas, normalize_image, run_canvases  # noqa: E402
from ffn.model import FFNConfig  # noqa: E402
from ffn.options import load_options, model_args_from_request, read_pbtxt  # noqa: E402
from ffn.tf_checkpoint import google_weights_to_model, read_tf_checkpoint  # noqa: E402

DATA = Path(os.environ.get("CONNECTOME_DATA", Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
GOOGLE = DATA / "ffn-fib25-google"
CROP = (slice(75, 175),) * 3


def sample_fovs(image: np.ndarray, config: FFNConfig, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` FOVs from the crop with a realistic seed channel (pad everywhere, 0.95 at the centre)."""
    rng = np.random.default_rng(0)
    fov = np.array(config.fov_size)
    normalized = normalize_image(image, config)
    images, seeds = [], []
    for _ in range(count):
        start = [rng.integers(0, s - f + 1) for s, f in zip(image.shape, fov)]
        images.append(normalized[tuple(slice(a, a + f) for a, f in zip(start, fov))])
        seed = np.full(tuple(fov), np.log(0.05 / 0.95), dtype=np.float32)
        seed[tuple(fov // 2)] = np.log(0.95 / 0.05)
        seeds.append(seed)
    return np.stack(images), np.stack(seeds)


def interleaved_seconds_per_step(paths: list[tuple[str, object, int]], images: np.ndarray, seeds: np.ndarray,
                                 rounds: int) -> dict[str, float]:
    """Median seconds per FOV of each (name, forward, batch) path, timed in alternating rounds.

    Alternating the paths round by round keeps their ratios fair on a shared machine
    whose load drifts during the run.
    """
    for _, forward, batch in paths:  # warm-up
        forward(images[:batch], seeds[:batch])
    samples: dict[str, list[float]] = {name: [] for name, _, _ in paths}
    for round_index in range(rounds):
        for name, forward, batch in paths:
            first = (round_index * batch) % len(images)
            chunk = np.arange(first, first + batch) % len(images)
            started = time.perf_counter()
            forward(images[chunk], seeds[chunk])
            samples[name].append((time.perf_counter() - started) / batch)
    return {name: float(np.median(values)) for name, values in samples.items()}


def tensorflow_forward(tensors: dict, depth: int, threads: int):
    """Google's convstack_3d forward pass written with tf.nn.conv3d (NDHWC), or None without TensorFlow."""
    site = os.environ.get("CONNECTOME_TF_SITE", str(Path(__file__).resolve().parent.parent / ".bench-tf"))
    if Path(site).is_dir() and site not in sys.path:
        sys.path.append(site)  # made by `make bench-tf`
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError:
        return None, None
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    weights = {k: tf.constant(v) for k, v in tensors.items() if k.startswith("seed_update/")}

    def conv(net, name):
        w, b = weights[f"seed_update/{name}/weights"], weights[f"seed_update/{name}/biases"]
        return tf.nn.conv3d(net, w, strides=[1] * 5, padding="SAME") + b

    @tf.function
    def net_fn(x):
        net = conv(tf.nn.relu(conv(x, "conv0_a")), "conv0_b")
        for i in range(1, depth):
            net = net + conv(tf.nn.relu(conv(tf.nn.relu(net), f"conv{i}_a")), f"conv{i}_b")
        return x[..., 1:2] + conv(tf.nn.relu(net), "conv_lom")

    def forward(images, seeds):
        return net_fn(tf.constant(np.stack([images, seeds], axis=-1))).numpy()[..., 0]

    return forward, tf.__version__


def fast_precisions_here(force_bf16: bool) -> list[str]:
    """Reduced precisions worth timing here: tf32, fp16 and bf16 on a GPU; bf16 on a CPU that has it natively."""
    if torch.cuda.is_available():
        return ["tf32", "fp16", "bf16"]
    return ["bf16"] if force_bf16 or native_bf16_cpu() else []


def native_bf16_cpu() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def variation_of_information(a: np.ndarray, b: np.ndarray) -> float:
    """VOI (nats) between two labelings over all voxels."""
    _, inverse, counts = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1, return_inverse=True, return_counts=True)
    p = counts / counts.sum()
    pa = np.unique(a, return_counts=True)[1] / a.size
    pb = np.unique(b, return_counts=True)[1] / b.size
    entropy = lambda q: float(-(q * np.log(q)).sum())  # noqa: E731
    return 2 * entropy(p) - entropy(pa) - entropy(pb)


def segment(image, model, config, options, precision: str, channels_last: bool,
            compile: bool = False) -> tuple[Canvas, float]:
    canvas = Canvas(image, config, options)
    forward = ForwardRunner(model, precision, channels_last, compile=compile)
    if compile:  # compiling (~20 s) is paid once per process, not per crop
        forward(np.zeros((1, *config.fov_size), np.float32), np.zeros((1, *config.fov_size), np.float32))
    started = time.perf_counter()
    run_canvases([canvas.run()], forward)
    return canvas, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds per path (median taken)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="canvases per forward pass on the batched path")
    parser.add_argument("--bf16", action="store_true", help="time bf16 even on a CPU without native bf16")
    parser.add_argument("--no-segmentation", action="store_true", help="per-step timings only")
    parser.add_argument("--fast-segmentation", action="store_true", help="also segment the crop with the fastest path")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import h5py

    request = read_pbtxt(GOOGLE / "configs/inference_training_sample2.pbtxt")
    config = FFNConfig(**model_args_from_request(request))
    options = load_options(GOOGLE / "configs/inference_training_sample2.pbtxt")
    tensors = read_tf_checkpoint(GOOGLE / "models/fib25/model.ckpt-27465036")
    model = google_weights_to_model(tensors, config)
    with h5py.File(DATA / "fib25-training2/fib25_training2.h5", "r") as f:
        image = f["volumes/raw"][CROP]
    images, seeds = sample_fovs(image, config, 2 * args.batch)
    gflop = config.flops_per_step() / 1e9

    tf_forward, tf_version = tensorflow_forward(tensors, config.depth, args.threads)
    fp32 = ForwardRunner(model, "fp32", channels_last=True)
    paths = [("(b) naive PyTorch fp32, 1 canvas, channels-first", ForwardRunner(model, "fp32", channels_last=False), 1),
             ("ours fp32 channels-last, 1 canvas", fp32, 1),
             (f"ours fp32 channels-last, {args.batch} canvases/pass", fp32, args.batch),
             ("ours fp32 compiled, 1 canvas", ForwardRunner(model, "fp32", True, compile=True), 1),
             (f"ours fp32 compiled, {args.batch} canvases/pass",
              ForwardRunner(model, "fp32", True, compile=True, batch_size=args.batch), args.batch)]
    if tf_forward is None:
        print("(a) TensorFlow baseline skipped: tensorflow-cpu is not installed (pip install tensorflow-cpu)")
    else:
        paths.insert(0, (f"(a) TensorFlow {tf_version} fp32 forward", tf_forward, 1))
        difference = np.abs(tf_forward(images[:1], seeds[:1]) - fp32(images[:1], seeds[:1])).max()
        print(f"TensorFlow vs ours fp32 logits: max |difference| {difference:.2e}")
    fast_precisions = fast_precisions_here(args.bf16)
    for precision in fast_precisions:
        paths.append((f"ours {precision} channels-last, {args.batch} canvases/pass",
                      ForwardRunner(model, precision, channels_last=True), args.batch))
    if "bf16" not in fast_precisions:
        print("bf16 skipped: this CPU has no native bf16 (no avx512_bf16/amx_bf16), where oneDNN emulates it "
              "~100x slower than fp32; --bf16 measures it anyway")
    seconds = interleaved_seconds_per_step(paths, images, seeds, args.rounds)
    rows = list(seconds.items())
    tf_seconds = seconds[paths[0][0]] if tf_forward is not None else None

    baseline = tf_seconds if tf_seconds is not None else seconds[paths[0][0]]
    baseline_name = "TensorFlow" if tf_seconds is not None else "naive PyTorch"
    print(f"\nPer FFN step (depth {config.depth}, FOV {config.fov_size}: {gflop:.1f} GFLOP/step), {args.threads} threads, median of {args.rounds} alternating rounds:")
    for name, per_step in rows:
        print(f"  {name:<52} {1000 * per_step:8.2f} ms/step  {gflop / per_step:8.1f} GFLOP/s  {baseline / per_step:5.2f}x vs {baseline_name}")

    if args.no_segmentation:
        return
    canvas, total = segment(image, model, config, options, "fp32", True)
    print(f"\nours fp32, whole crop 100^3: {len(canvas.origins)} segments, {canvas.steps} steps, {total:.1f} s, "
          f"{image.size / total:.0f} voxels/s, {total / canvas.steps:.3f} s/step, {gflop * canvas.steps / total:.1f} GFLOP/s")
    if tf_seconds is not None:
        print(f"  per step vs TensorFlow forward: {tf_seconds / (total / canvas.steps):.2f}x "
              f"(Google's own inference on this crop here: ~0.27 s/step, 726 steps)")
    if args.fast_segmentation:  # each fast path must keep the segmentation within VOI 0.05 of fp32
        for precision, compiled in [("fp32", True)] + [(precision, False) for precision in fast_precisions]:
            fast, fast_seconds = segment(image, model, config, options, precision, True, compile=compiled)
            voi = variation_of_information(canvas.labels(), fast.labels())
            print(f"{precision}{' compiled' if compiled else ''}: {len(fast.origins)} segments, {fast.steps} steps, {fast_seconds:.1f} s, "
                  f"VOI to fp32 {voi:.4f} nats ({'within' if voi <= 0.05 else 'NOT within'} 0.05)")


if __name__ == "__main__":
    main()
