"""FFN training throughput: our PyTorch loop against the same network's training step in TensorFlow.

Both sides train Google's convstack_3d (default depth 12, 32 features, FOV 33^3) with
batch 4, sigmoid cross-entropy, per-element gradient clipping 0.7 and SGD lr 1e-3, on
the same number of CPU threads, in the same run. The figure is training examples per
second, an example being one FOV step with its backward pass.

Ours is the whole loop (`ffn.training.Trainer`: class-balanced centres, augmentation,
FOV moves, canvas write-back); TensorFlow's is only the compiled step on a fixed
batch, so the comparison favours TensorFlow.

TensorFlow is a bench-only dependency (tensorflow-cpu). Its pins clash with ours
(it wants an older h5py), so it may live in a separate directory: pass --tf-site DIR
or set CONNECTOME_TF_SITE (made with `pip install --no-deps --target DIR tensorflow-cpu ...`).
Without it the bench reports the PyTorch figure alone and says so.

    .venv/bin/python bench/ffn_training_bench.py [--steps 4] [--threads 2] [--depth 12] [--fov 33]
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

from ffn.model import FFNConfig, build_model  # noqa: E402
from ffn.training import ExampleSource, FOVBatcher, Trainer, TrainingOptions, fov_offsets  # noqa: E402


def synthetic_training_volume(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Voronoi cells with dark boundaries: enough structure for the FOV moves to happen."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    markers = np.zeros((size,) * 3, dtype=np.int32)
    points = rng.integers(0, size, size=(max(8, size // 4), 3))
    markers[tuple(points.T)] = np.arange(1, len(points) + 1)
    _, indices = ndimage.distance_transform_edt(markers == 0, return_indices=True)
    labels = markers[tuple(indices)].astype(np.uint64)
    boundary = ndimage.grey_dilation(labels, size=3) != labels
    labels[boundary] = 0
    image = np.clip(np.where(boundary, 70, 180) + rng.normal(0, 15, labels.shape), 0, 255).astype(np.uint8)
    return image, labels


def pytorch_step(config: FFNConfig, device: str, channels_last: bool = True):
    """One step of our full training loop, as a callable (4 examples per call)."""
    size = 2 * (max(config.fov_size) // 2 + max(config.deltas)) + 24
    image, labels = synthetic_training_volume(size)
    options = TrainingOptions(min_object_voxels=100, device=device, channels_last=channels_last)
    rng = np.random.default_rng(0)
    source = ExampleSource(image, labels, config, options, rng)
    trainer = Trainer(build_model(config), config, options, FOVBatcher(source, fov_offsets(config.deltas, rng)),
                      torch.device(device))

    def step():
        trainer.train_step()
        if device == "cuda":
            torch.cuda.synchronize()

    return step


def examples_per_second(step, steps: int, batch_size: int = 4) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def load_tensorflow(site: str | None):
    if site:
        sys.path.append(site)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except Exception as exc:  # any failure to import means: no TensorFlow figure
        return None, f"{type(exc).__name__}: {exc}"
    return tf, None


def tensorflow_step(tf, config: FFNConfig, batch_size: int = 4):
    """The same network's compiled training step (NDHWC, as Google's) on a fixed batch, as a callable."""
    features = config.features
    init = tf.initializers.TruncatedNormal(stddev=0.01)
    shapes = [(3, 3, 3, 2, features), (3, 3, 3, features, features)]
    shapes += [(3, 3, 3, features, features)] * (2 * (config.depth - 1))
    shapes += [(1, 1, 1, features, 1)]
    weights = [tf.Variable(init(shape)) for shape in shapes]
    biases = [tf.Variable(tf.zeros(shape[-1])) for shape in shapes]

    def conv(x, index):
        return tf.nn.conv3d(x, weights[index], strides=[1] * 5, padding="SAME") + biases[index]

    def network(x):
        seed = x[..., 1:2]
        net = conv(tf.nn.relu(conv(x, 0)), 1)
        for module in range(config.depth - 1):
            inner = tf.nn.relu(conv(tf.nn.relu(net), 2 + 2 * module))
            net = net + conv(inner, 3 + 2 * module)
        return seed + conv(tf.nn.relu(net), len(shapes) - 1)

    variables = weights + biases
    optimizer = tf.keras.optimizers.SGD(learning_rate=1e-3)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=network(x)))
        gradients = [tf.clip_by_value(g, -0.7, 0.7) for g in tape.gradient(loss, variables)]
        optimizer.apply_gradients(zip(gradients, variables))
        return loss

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch_size, *config.fov_size, 2)).astype(np.float32))
    y = tf.constant(rng.choice([0.05, 0.95], size=(batch_size, *config.fov_size, 1)).astype(np.float32))
    return lambda: train_step(x, y).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per framework (batch 4 each)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per framework")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both frameworks")
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--fov", type=int, default=33, help="isotropic FOV size")
    parser.add_argument("--deltas", type=int, default=8)
    parser.add_argument("--tf-site", default=os.environ.get("CONNECTOME_TF_SITE", str(Path(__file__).resolve().parent.parent / ".bench-tf")), help="directory holding tensorflow-cpu")
    parser.add_argument("--gpu-only", action="store_true", help="only the GPU figure (a GPU machine without TensorFlow)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    config = FFNConfig(depth=args.depth, fov_size=(args.fov,) * 3, deltas=(args.deltas,) * 3)
    print(f"network: depth {config.depth}, {config.features} features, FOV {config.fov_size}, batch 4, "
          f"{config.flops_per_step() / 1e9:.1f} GFLOP forward per FOV; {args.threads} CPU threads")
    if args.gpu_only:
        gpu_figure(config, args.steps)
        return
    # TensorFlow reads its thread settings once, before first use
    tf, why_not = load_tensorflow(args.tf_site)
    if tf is not None:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)

    # the CPU may be shared: alternate the frameworks round by round and keep each one's best round
    contenders = {f"PyTorch {torch.__version__} (our loop, CPU)": pytorch_step(config, "cpu")}
    if tf is None:
        print(f"TensorFlow unavailable ({why_not}): PyTorch figure only")
    else:
        contenders[f"TensorFlow {tf.__version__} (compiled step, CPU)"] = tensorflow_step(tf, config)
    for step in contenders.values():
        for _ in range(args.warmup):
            step()
    best = {name: 0.0 for name in contenders}
    for round_index in range(args.rounds):
        for name, step in contenders.items():
            rate = examples_per_second(step, args.steps)
            best[name] = max(best[name], rate)
            print(f"round {round_index + 1}: {name}: {rate:.3f} examples/s")
    print("summary (best round of each):")
    for name, rate in best.items():
        print(f"  {name}: {rate:.3f} examples/s")
    if tf is not None:
        ours, theirs = best.values()
        print(f"  ratio on CPU: ours is {ours / theirs:.2f}x TensorFlow per example")
    gpu_figure(config, args.steps)


def gpu_figure(config: FFNConfig, steps: int) -> None:
    """Our training loop's examples/s on the GPU, when there is one (TF32 convolutions, PyTorch's default)."""
    if not torch.cuda.is_available():
        print("  no GPU here: no GPU figure")
        return
    gpu_step = pytorch_step(config, "cuda")
    for _ in range(5):
        gpu_step()
    rates = [examples_per_second(gpu_step, max(steps, 50)) for _ in range(3)]
    print(f"  PyTorch {torch.__version__} on {torch.cuda.get_device_name()}: {max(rates):.1f} examples/s "
          f"(best of 3 rounds of {max(steps, 50)} steps, batch 4)")


if __name__ == "__main__":
    main()
