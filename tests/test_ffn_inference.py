"""FFN inference mechanics on a hand-wired toy network (fast), resume, batching, consensus and bad input.

The toy network computes logits = seed + 3 * image: bright cells flood, dark
walls stop the flood, so the right segmentation is known: one segment per cell.
Parity with Google's network and code is in test_ffn_parity.py.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import require

from cli.main import main
from ffn.consensus import split_by_intersection
from ffn.forward import ForwardRunner
from ffn.inference import Canvas, face_max_moves, run_canvases, segment_subvolume
from ffn.model import ConvStack3DFFN, FFNConfig, save_model
from ffn.options import InferenceOptions, load_options, options_from_request, parse_pbtxt
from volumes.errors import InputError

TOY_CONFIG = FFNConfig(depth=1, features=2, fov_size=(9, 9, 9), deltas=(3, 3, 3), image_mean=128.0, image_stddev=50.0)
CELL = 10  # bright interior side
WALL = 5  # thicker than the FOV radius, so a FOV inside one cell never sees the next (the toy net has no notion of connectivity)


def toy_model() -> ConvStack3DFFN:
    """logits = seed + 3 * normalised image, built from the real layer types."""
    model = ConvStack3DFFN(TOY_CONFIG)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.conv0_a.weight[0, 0, 1, 1, 1] = 1.0  # relu(image)
        model.conv0_a.weight[1, 0, 1, 1, 1] = -1.0  # relu(-image)
        model.conv0_b.weight[0, 0, 1, 1, 1] = 1.0
        model.conv0_b.weight[1, 1, 1, 1, 1] = 1.0
        model.conv_lom.weight[0, 0] = 3.0
        model.conv_lom.weight[0, 1] = -3.0
    return model.eval()


def cells_image(cells: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Bright cubic cells between dark walls, brightest at their centres, and their labels."""
    size = cells * (CELL + WALL) + WALL
    image = np.full((size,) * 3, 20, dtype=np.uint8)
    local = np.indices((CELL,) * 3) - (CELL - 1) / 2
    bump = (250 - 4 * np.sqrt((local ** 2).sum(axis=0))).astype(np.uint8)
    truth = np.zeros(image.shape, dtype=np.uint64)
    label = 0
    for z in range(cells):
        for y in range(cells):
            for x in range(cells):
                label += 1
                sel = tuple(slice(WALL + i * (CELL + WALL), (i + 1) * (CELL + WALL)) for i in (z, y, x))
                image[sel] = bump
                truth[sel] = label
    return image, truth


def toy_options(**changes) -> InferenceOptions:
    values = dict(min_segment_size=100, min_boundary_dist=(1, 1, 1), seed_policy="PolicyPeaks")
    values.update(changes)
    return InferenceOptions(**values)


def test_face_max_moves_picks_each_face_maximum_best_first():
    logits = np.full((33, 33, 33), -5.0, dtype=np.float32)
    logits[24, 10, 20] = 3.0  # +z face (z = 16 + 8)
    logits[8, 16, 16] = 2.5   # -z face centre
    logits[16, 16, 24] = 1.0  # +x face, below the threshold
    moves = face_max_moves(logits, np.array([8, 8, 8]), threshold=2.0)
    assert [offset for _, offset in moves] == [(8, -6, 4), (-8, 0, 0)]


def test_flood_fill_recovers_every_cell_and_stops_at_walls():
    image, truth = cells_image()
    labels, origins = segment_subvolume(image, toy_model(), TOY_CONFIG, toy_options())
    assert len(origins) == 8
    for origin in origins:
        segment = labels == origin.id
        cell = truth[origin.start_zyx]
        assert cell > 0
        assert not (segment & (truth != cell)).any(), origin  # never crosses a wall
        assert segment.sum() >= 0.9 * (truth == cell).sum(), origin  # face-max moves cover most of the cell
        assert origin.voxels == int(segment.sum()) and origin.iters > 1
    assert [o.id for o in origins] == list(range(1, 9))


def test_batched_canvases_give_the_same_result_as_one_at_a_time():
    image, _ = cells_image()
    forward = ForwardRunner(toy_model(), "fp32", channels_last=True)
    alone = []
    for flip in (False, True):
        canvas = Canvas(image[::-1] if flip else image, TOY_CONFIG, toy_options())
        run_canvases([canvas.run()], forward)
        alone.append(canvas)
    together = [Canvas(image[::-1] if flip else image, TOY_CONFIG, toy_options()) for flip in (False, True)]
    steps_before = forward.steps
    run_canvases([c.run() for c in together], forward, batch_size=2)
    assert forward.steps - steps_before == sum(c.steps for c in alone)
    for a, b in zip(alone, together):
        assert np.array_equal(a.labels(), b.labels())
        assert [o.to_dict()["start_zyx"] for o in a.origins.values()] == [o.to_dict()["start_zyx"] for o in b.origins.values()]


def test_compiled_network_segments_exactly_as_the_eager_one():
    """The fused (Inductor, frozen weights) path pads short batches and changes no label."""
    import shutil

    require(shutil.which("g++") is not None, "g++ (a C++ compiler) is needed to compile the network on CPU")
    image, _ = cells_image()
    canvases = {}
    for compiled in (False, True):
        forward = ForwardRunner(toy_model(), "fp32", channels_last=True, compile=compiled, batch_size=3)
        # three canvas slots, two canvases: every forward pass is a short batch the compiled path pads
        canvases[compiled] = [Canvas(image[::-1] if flip else image, TOY_CONFIG, toy_options()) for flip in (False, True)]
        run_canvases([c.run() for c in canvases[compiled]], forward, batch_size=3)
        assert forward.steps == sum(c.steps for c in canvases[compiled])
    for eager, fused in zip(canvases[False], canvases[True]):
        assert eager.steps == fused.steps and len(eager.origins) >= 8
        assert np.array_equal(eager.labels(), fused.labels())


def test_compiled_network_runs_a_long_batch_in_pieces_of_its_batch_size():
    """A batch longer than the compiled one is split into compiled-size pieces, with the eager numbers."""
    import shutil

    require(shutil.which("g++") is not None, "g++ (a C++ compiler) is needed to compile the network on CPU")
    rng = np.random.default_rng(0)
    images = rng.normal(size=(5, 9, 9, 9)).astype(np.float32)
    seeds = rng.normal(size=(5, 9, 9, 9)).astype(np.float32)
    eager = ForwardRunner(toy_model(), "fp32", compile=False)(images, seeds)
    fused_runner = ForwardRunner(toy_model(), "fp32", compile=True, batch_size=2)
    fused_runner(images[:2], seeds[:2])  # compiles the graph for batch 2
    with torch._dynamo.config.patch(error_on_recompile=True):  # batch 5 must reuse it, not compile another
        fused = fused_runner(images, seeds)
    assert fused.shape == (5, 9, 9, 9) and fused_runner.steps == 7
    np.testing.assert_allclose(fused, eager, rtol=1e-5, atol=1e-5)


def test_compiled_validation_compiles_each_new_set_of_weights():
    """Training validates new weights again and again; each compiled validation must use them (and stay compiled)."""
    import shutil

    from ffn.training import BlockValidator

    require(shutil.which("g++") is not None, "g++ (a C++ compiler) is needed to compile the network on CPU")
    image, truth = cells_image()
    compiled = BlockValidator(image, truth, (8, 8, 8), toy_options(compile=True), with_erl=False)
    eager = BlockValidator(image, truth, (8, 8, 8), toy_options(), with_erl=False)
    shy = toy_model()
    with torch.no_grad():
        shy.conv_lom.bias.fill_(-2.5)  # logits lowered: floods stop short of the walls
    segmentations = []
    for model in (toy_model(), shy):
        # a fresh compile, not a recompile: after 8 of those dynamo would quietly fall back to eager
        with torch._dynamo.config.patch(error_on_recompile=True):
            report = compiled(model, TOY_CONFIG)
        assert report == eager(model, TOY_CONFIG)
        assert np.array_equal(compiled.last_segmentation, eager.last_segmentation)
        segmentations.append(compiled.last_segmentation)
    assert (segmentations[0] != 0).sum() > (segmentations[1] != 0).sum() > 0  # the second weights were used


def test_min_segment_size_rejects_small_segments():
    image, _ = cells_image()
    labels, origins = segment_subvolume(image, toy_model(), TOY_CONFIG, toy_options(min_segment_size=2000))
    assert origins == [] and not labels.any()  # cells are 1000 voxels


def test_inverted_origins_and_consensus():
    image, truth = cells_image()
    labels, origins = segment_subvolume(image, toy_model(), TOY_CONFIG, toy_options())
    inverted_options = toy_options(seed_policy="PolicyInvertOrigins",
                                   seed_policy_args={"origins": [o.to_dict() for o in origins]})
    inverted, inverted_origins = segment_subvolume(image, toy_model(), TOY_CONFIG, inverted_options)
    assert [o.start_zyx for o in inverted_origins] == [o.start_zyx for o in origins][::-1]
    consensus = split_by_intersection(labels, inverted, min_size=100)
    assert len(np.unique(consensus[consensus > 0])) == len(origins)
    # each consensus segment lies inside one true cell
    for value in np.unique(consensus[consensus > 0]):
        assert len(np.unique(truth[consensus == value])) == 1


def test_consensus_command_writes_the_split_by_intersection_of_two_layers(workspace, capsys):
    from volumes.io import open_volume
    from volumes.precomputed import write_layer

    image, truth = cells_image()
    first, origins = segment_subvolume(image, toy_model(), TOY_CONFIG, toy_options())
    second = np.where(truth > 4, 1, truth).astype(np.uint64)  # a run that merged cells 5-8 into one segment
    for name, labels in (("first", first), ("second", second)):
        write_layer(workspace.layer_path(name), labels, (8, 8, 8), "segmentation", progress=False)
    assert main(["ffn", "consensus", "first", "second", "--out", "both", "--min-size", "100", "-w", str(workspace.root)]) == 0
    written = np.asarray(open_volume(workspace.layer_url("both")).read())
    assert np.array_equal(written, split_by_intersection(first, second, min_size=100))
    assert len(np.unique(written[written > 0])) == len(origins)  # the merger of the second run is split again
    assert main(["ffn", "consensus", "first", "nothing", "--out", "x", "-w", str(workspace.root)]) == 2
    assert "no layer 'nothing'" in capsys.readouterr().err


def test_grid_policy_finds_every_cell():
    image, truth = cells_image()
    labels, origins = segment_subvolume(image, toy_model(), TOY_CONFIG, toy_options(seed_policy="PolicyGrid3d"))
    assert sorted(int(truth[o.start_zyx]) for o in origins) == list(range(1, 9))


def test_fill_empty_space_seeds_only_where_nothing_is_segmented():
    image, truth = cells_image()
    canvas = Canvas(image, TOY_CONFIG, toy_options(seed_policy="PolicyFillEmptySpace"))
    canvas.segmentation[...] = np.where(truth == 8, 0, 99).astype(np.int32)  # all but cell 8 taken
    canvas.compute_seeds()
    assert len(canvas.seed_coords) >= 1
    assert all(truth[tuple(p)] == 8 for p in canvas.seed_coords)


def _write_toy(tmp_path, workspace):
    image, truth = cells_image()
    np.save(tmp_path / "image.npy", image)
    save_model(tmp_path / "toy.pt", toy_model(), TOY_CONFIG)
    (tmp_path / "options.toml").write_text("[inference]\nmin_segment_size = 100\n")
    return ["--workspace", str(workspace.root), "--image", str(tmp_path / "image.npy"), "--model",
            str(tmp_path / "toy.pt"), "--options", str(tmp_path / "options.toml"), "--no-progress"], truth


def test_segment_command_writes_a_layer_and_resumes(tmp_path, workspace):
    from volumes.io import open_volume

    common, truth = _write_toy(tmp_path, workspace)
    assert main(["ffn", "segment", *common, "--out", "full"]) == 0
    assert main(["ffn", "segment", *common, "--out", "part", "--max-segments", "3"]) == 0
    partial = json.loads((workspace.root / "ffn-runs/part/origins.json").read_text())
    assert len(partial["segments"]) == 3 and not partial["complete"]
    assert main(["ffn", "segment", *common, "--out", "part", "--overwrite"]) == 0  # resumes after segment 3
    full = json.loads((workspace.root / "ffn-runs/full/origins.json").read_text())
    resumed = json.loads((workspace.root / "ffn-runs/part/origins.json").read_text())
    assert resumed["complete"] and full["steps"] == resumed["steps"]
    assert [s["start_zyx"] for s in full["segments"]] == [s["start_zyx"] for s in resumed["segments"]]
    a = open_volume(workspace.layer_url("full")).read()
    b = open_volume(workspace.layer_url("part")).read()
    assert a.dtype == np.uint64 and np.array_equal(a, b)
    assert len(np.unique(a[a > 0])) == 8


def test_segment_command_compiled_writes_the_same_layer(tmp_path, workspace):
    import shutil

    from volumes.io import open_volume

    require(shutil.which("g++") is not None, "g++ (a C++ compiler) is needed to compile the network on CPU")
    common, _ = _write_toy(tmp_path, workspace)
    assert main(["ffn", "segment", *common, "--out", "eager"]) == 0
    assert main(["ffn", "segment", *common, "--out", "compiled", "--compile"]) == 0
    eager = open_volume(workspace.layer_url("eager")).read()
    assert len(np.unique(eager[eager > 0])) == 8
    assert np.array_equal(eager, open_volume(workspace.layer_url("compiled")).read())


def test_segment_command_averages_views_and_a_symmetric_network_keeps_its_labels(tmp_path, workspace):
    """The toy network acts voxel by voxel, so it is its own flipped/transposed copy: eight views, same labels."""
    from volumes.io import open_volume

    common, _ = _write_toy(tmp_path, workspace)
    assert main(["ffn", "segment", *common, "--out", "one"]) == 0
    assert main(["ffn", "segment", *common, "--out", "eight", "--averaged-views", "8"]) == 0
    assert json.loads((workspace.root / "ffn-runs/eight/run.json").read_text())["options"]["averaged_views"] == 8
    one = open_volume(workspace.layer_url("one")).read()
    assert len(np.unique(one[one > 0])) == 8
    assert np.array_equal(one, open_volume(workspace.layer_url("eight")).read())


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("connectome: error:") and "\n" not in err
    return err


def test_bbox_outside_the_volume_is_a_one_line_error(tmp_path, workspace, capsys):
    common, _ = _write_toy(tmp_path, workspace)
    err = _one_line_error(capsys, ["ffn", "segment", *common, "--out", "x", "--bbox", "0,0,0,30,30,99"])
    assert "outside" in err


def test_image_smaller_than_the_fov_is_a_one_line_error(tmp_path, workspace, capsys):
    common, _ = _write_toy(tmp_path, workspace)
    err = _one_line_error(capsys, ["ffn", "segment", *common, "--out", "x", "--bbox", "0,0,0,8,20,20"])
    assert "smaller than the FFN field of view" in err


def test_missing_pbtxt_field_is_a_one_line_error(tmp_path, capsys, google_ffn_dir):
    text = (google_ffn_dir / "configs/inference_training_sample2.pbtxt").read_text()
    broken = tmp_path / "broken.pbtxt"
    broken.write_text(text.replace("segment_threshold: 0.6", ""))
    with pytest.raises(InputError, match="lacks the field 'segment_threshold'"):
        load_options(broken)
    no_args = tmp_path / "no_args.pbtxt"
    no_args.write_text(text.replace("model_args:", "model_name_args_removed:"))
    err = _one_line_error(capsys, ["ffn", "import-tf", str(google_ffn_dir / "models/fib25/model.ckpt-27465036"),
                                   "--config", str(no_args), "--out", str(tmp_path / "m.pt")])
    assert "model_args" in err


def test_pbtxt_options_match_googles_fib25_settings():
    request = parse_pbtxt('inference_options { init_activation: 0.95 pad_value: 0.05 move_threshold: 0.9 '
                          'min_boundary_dist { x: 1 y: 2 z: 3 } segment_threshold: 0.6 min_segment_size: 1000 }\n'
                          'seed_policy: "PolicyPeaks"  # comment\n')
    options = options_from_request(request)
    assert options.min_boundary_dist == (3, 2, 1)
    assert (options.move_threshold, options.segment_threshold, options.min_segment_size) == (0.9, 0.6, 1000)
    assert options.disco_seed_threshold == 0.0  # Google's proto default, which is active


def test_checkpoint_import_errors_are_one_line(tmp_path, capsys):
    err = _one_line_error(capsys, ["ffn", "import-tf", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "m.pt")])
    assert "does not exist" in err


def test_gpu_only_precisions_are_refused_on_cpu_and_numerics_switches_are_restored():
    from ffn.forward import cuda_numerics

    for precision in ("fp16", "tf32"):
        with pytest.raises(InputError, match="needs a GPU"):
            ForwardRunner(toy_model(), precision, device="cpu")
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.allow_tf32)
    with cuda_numerics("fp32"):  # the reference path: deterministic kernels, no TF32
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.allow_tf32
    with cuda_numerics("tf32"):
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.allow_tf32
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.allow_tf32) == before


def _numpy_view(array: np.ndarray, flips: tuple[int, ...], transpose: bool, inverse: bool = False) -> np.ndarray:
    """SYMMETRIC_VIEWS' (N, C, z, y, x) view applied to a (B, z, y, x) array, or undone, written independently in numpy."""
    axes = tuple(a - 1 for a in flips)
    if inverse:  # undo in reverse order, without assuming the view is its own inverse
        array = np.flip(array, axes) if axes else array
        return np.swapaxes(array, 2, 3) if transpose else array
    array = np.swapaxes(array, 2, 3) if transpose else array
    return np.flip(array, axes) if axes else array


def test_averaged_views_are_the_mean_of_each_views_output_mapped_back_and_are_symmetric():
    """views=N averages the network over N flipped/transposed FOVs; the average is then equivariant under them."""
    from ffn.forward import SYMMETRIC_VIEWS

    model = ConvStack3DFFN(FFNConfig(depth=2, features=3, fov_size=(5, 5, 5), deltas=(2, 2, 2)))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # a network with no symmetry of its own
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    rng = np.random.default_rng(1)
    images, seeds = (rng.normal(size=(3, 5, 5, 5)).astype(np.float32) for _ in range(2))
    single = ForwardRunner(model, "fp32")
    for views in (2, 4, 8):
        averaged = ForwardRunner(model, "fp32", views=views)
        expected = np.mean([_numpy_view(single(_numpy_view(images, *v), _numpy_view(seeds, *v)), *v, inverse=True)
                            for v in SYMMETRIC_VIEWS[:views]], axis=0)
        out = averaged(images, seeds)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
        assert np.abs(out - single(images, seeds)).max() > 0.1  # it is not the single view's output
        for v in SYMMETRIC_VIEWS[:views]:
            np.testing.assert_allclose(averaged(_numpy_view(images, *v), _numpy_view(seeds, *v)), _numpy_view(out, *v),
                                       rtol=1e-5, atol=1e-5)


def test_averaged_views_refuse_counts_without_a_closed_set_and_unequal_y_x_fov_sizes():
    with pytest.raises(InputError, match="averaged_views must be one of"):
        InferenceOptions(averaged_views=3)
    wide = ConvStack3DFFN(FFNConfig(depth=1, features=2, fov_size=(5, 5, 7), deltas=(2, 2, 2)))
    with pytest.raises(InputError, match="y and x sizes must agree"):
        ForwardRunner(wide, "fp32", views=2)
    ForwardRunner(wide, "fp32", views=1)  # one view needs no transpose


def test_volume_normalisation_makes_a_darker_image_segment_as_the_original(tmp_path, workspace, capsys):
    """A darker, flatter copy of the image (another microscope's contrast) floods nothing with the model's
    mean/stddev; with its own statistics it segments exactly like the original does with its own."""
    from ffn.evaluation import evaluate_segmentation
    from volumes.io import open_volume

    common, truth = _write_toy(tmp_path, workspace)
    image = np.load(tmp_path / "image.npy")
    np.save(tmp_path / "dark.npy", np.rint(image * 0.6 + 10).astype(np.uint8))
    dark = [*common[:common.index("--image") + 1], str(tmp_path / "dark.npy"), *common[common.index("--image") + 2:]]
    assert main(["ffn", "segment", *common, "--out", "original", "--normalize", "volume"]) == 0
    assert main(["ffn", "segment", *dark, "--out", "dark_model"]) == 0
    assert main(["ffn", "segment", *dark, "--out", "dark_volume", "--normalize", "volume"]) == 0
    read = {name: np.asarray(open_volume(workspace.layer_url(name)).read())
            for name in ("original", "dark_model", "dark_volume")}
    assert evaluate_segmentation(read["dark_volume"], read["original"])["voi_sum"] <= 0.1
    assert evaluate_segmentation(read["dark_volume"], truth)["voi_sum"] <= 0.1
    assert evaluate_segmentation(read["dark_model"], truth)["voi_sum"] > 0.5  # the model's 128/50 misreads it
    recorded = json.loads((workspace.root / "ffn-runs/dark_volume/run.json").read_text())
    assert recorded["normalization"]["method"] == "volume"
    assert recorded["normalization"]["image_mean"] == pytest.approx(float(np.rint(image * 0.6 + 10).mean()), abs=1e-3)
    with pytest.raises(SystemExit) as refused:  # argparse's own one-line usage error, exit status 2
        main(["ffn", "segment", *common, "--out", "x", "--normalize", "sideways"])
    assert refused.value.code == 2 and "invalid choice: 'sideways'" in capsys.readouterr().err
    with pytest.raises(InputError, match="normalize must be one of model, volume, clahe"):
        toy_options(normalize="sideways")


def test_clahe_runs_block_by_block_and_keeps_the_image_shape():
    from ffn import normalization
    from volumes.geometry import Box

    image, _ = cells_image(cells=3)
    box = Box.from_shape(image.shape)
    whole = normalization.clahe(lambda b: image[b.slices()], box)
    assert whole.shape == image.shape and whole.dtype == np.uint8 and whole.std() > 0
    reads = []

    def read(b):
        reads.append(b.size)
        return image[b.slices()]

    saved = normalization.CLAHE_BLOCK_ZYX
    try:
        normalization.CLAHE_BLOCK_ZYX = (16, 16, 16)
        blockwise = normalization.clahe(read, box)
    finally:
        normalization.CLAHE_BLOCK_ZYX = saved
    assert len(reads) > 1 and max(reads) < image.size  # bounded by the block and its context, not the volume
    assert blockwise.shape == image.shape
    assert np.corrcoef(blockwise.ravel().astype(float), whole.ravel().astype(float))[0, 1] > 0.8
