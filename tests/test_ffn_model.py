"""The FFN network, the TensorFlow checkpoint reader and Google weight import, on Google's FIB-25 checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ffn.model import ConvStack3DFFN, FFNConfig, build_model, load_model, save_model
from ffn.tf_checkpoint import google_weights_to_model, read_tf_checkpoint
from volumes.errors import InputError

CHECKPOINT = "models/fib25/model.ckpt-27465036"


@pytest.fixture(scope="module")
def google_tensors(google_ffn_dir):
    return read_tf_checkpoint(google_ffn_dir / CHECKPOINT)


@pytest.fixture(scope="module")
def fib25_model(google_tensors):
    return google_weights_to_model(google_tensors, FFNConfig())


def test_bundle_reader_matches_tensorflow_export(google_tensors, google_ffn_dir):
    reference = np.load(google_ffn_dir / "models/fib25/weights-numpy-reference.npz")
    assert len(reference.files) == 50
    for name in reference.files:
        assert google_tensors[name].dtype == reference[name].dtype, name
        assert np.array_equal(google_tensors[name], reference[name]), name
    assert int(google_tensors["global_step"]) == 27465036


def _numpy_conv3d_same(x: np.ndarray, weights_zyxio: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """SAME 3D cross-correlation of x (z, y, x, in) with Google-layout weights (kz, ky, kx, in, out), float64."""
    kz, ky, kx = weights_zyxio.shape[:3]
    pz, py, px = kz // 2, ky // 2, kx // 2
    padded = np.pad(x, ((pz, pz), (py, py), (px, px), (0, 0)))
    out = np.zeros(x.shape[:3] + (weights_zyxio.shape[4],))
    for dz in range(kz):
        for dy in range(ky):
            for dx in range(kx):
                window = padded[dz:dz + x.shape[0], dy:dy + x.shape[1], dx:dx + x.shape[2]]
                out += window @ weights_zyxio[dz, dy, dx]
    return out + bias


def _numpy_ffn(tensors: dict, image: np.ndarray, seed: np.ndarray, depth: int) -> np.ndarray:
    """Google's convstack_3d written independently with NumPy: returns logits (z, y, x)."""
    def conv(net, name):
        return _numpy_conv3d_same(net, tensors[f"seed_update/{name}/weights"].astype(np.float64),
                                  tensors[f"seed_update/{name}/biases"].astype(np.float64))

    relu = lambda a: np.maximum(a, 0.0)  # noqa: E731
    net = np.stack([image, seed], axis=-1).astype(np.float64)
    net = conv(relu(conv(net, "conv0_a")), "conv0_b")
    for i in range(1, depth):
        net = net + conv(relu(conv(relu(net), f"conv{i}_a")), f"conv{i}_b")
    return seed + conv(relu(net), "conv_lom")[..., 0]


def test_logits_equal_an_independent_numpy_implementation(google_tensors, fib25_model, fib25_h5):
    import h5py

    torch.set_num_threads(2)
    with h5py.File(fib25_h5, "r") as f:
        raw = f["volumes/raw"][100:133, 90:123, 110:143]
    image = (raw.astype(np.float32) - 128.0) / 33.0
    seed = np.full(image.shape, np.log(0.05 / 0.95), dtype=np.float32)
    seed[16, 16, 16] = np.log(0.95 / 0.05)
    seed[10:20, 5:12, 20:30] = 1.5  # a visited region, so the seed channel matters
    expected = _numpy_ffn(google_tensors, image.astype(np.float64), seed.astype(np.float64), depth=12)
    x = torch.from_numpy(np.stack([image, seed])[None])
    with torch.inference_mode():
        ours = fib25_model(x)[0, 0].numpy()
    assert np.abs(ours - expected).max() <= 1e-4
    assert np.abs(expected - seed).max() > 1.0  # the network does change the seed: the check is not vacuous


def test_model_file_round_trip_is_self_describing(tmp_path, fib25_model):
    config = FFNConfig(image_mean=120.0, image_stddev=30.0)
    save_model(tmp_path / "m.pt", fib25_model, config)
    loaded, loaded_config = load_model(tmp_path / "m.pt")
    assert loaded_config == config
    for (name, a), (_, b) in zip(fib25_model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_layernorm_variant_builds_and_round_trips(tmp_path):
    config = FFNConfig(depth=3, features=8, fov_size=(9, 11, 11), deltas=(2, 3, 3), use_layernorm=True)
    model = build_model(config)
    x = torch.randn(2, 2, 9, 11, 11)
    with torch.inference_mode():
        out = model(x)
    assert out.shape == (2, 1, 9, 11, 11)
    save_model(tmp_path / "ln.pt", model, config)
    loaded, loaded_config = load_model(tmp_path / "ln.pt")
    assert loaded_config.use_layernorm
    with torch.inference_mode():
        assert torch.equal(loaded(x), out)


def test_checkpoint_that_does_not_fit_the_declared_depth_is_refused(google_tensors):
    with pytest.raises(InputError, match="depth 9"):
        google_weights_to_model(google_tensors, FFNConfig(depth=9))


def test_checkpoint_that_does_not_fit_the_declared_features_is_refused(google_tensors):
    with pytest.raises(InputError, match="does not fit"):
        google_weights_to_model(google_tensors, FFNConfig(features=16))


@pytest.mark.parametrize("fields, message", [
    ({"fov_size": (32, 33, 33)}, "odd"),
    ({"fov_size": (33, 33)}, "fov_size"),
    ({"image_stddev": 0.0}, "image_stddev"),
])
def test_bad_config_is_a_one_line_error(fields, message):
    with pytest.raises(InputError, match=message) as info:
        FFNConfig(**fields)
    assert "\n" not in str(info.value)


def test_model_file_whose_weights_do_not_fit_its_config_is_refused(tmp_path):
    model = ConvStack3DFFN(FFNConfig(depth=2, features=4))
    save_model(tmp_path / "m.pt", model, FFNConfig(depth=3, features=4))
    with pytest.raises(InputError, match="do not fit"):
        load_model(tmp_path / "m.pt")
