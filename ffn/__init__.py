"""Flood-Filling Networks in PyTorch: model, Google checkpoint import, inference, training.

- model.py: the convstack 3D network, FFNConfig, self-describing model files (load_model/save_model)
- tf_checkpoint.py: TensorFlow tensor-bundle reader and Google weight import (no TensorFlow needed)
- options.py: inference options from our TOML or Google's InferenceRequest pbtxt
- inference.py: Canvas (Google's inference semantics) and the batched driver; segment_subvolume
- seeds.py: seed policies; forward.py: precision/layout/device
- segment_run.py: one resumable run over a workspace image; distributed.py: overlapping subvolumes on Dask, stitched
- consensus.py: oversegmentation consensus of two runs (`connectome ffn consensus`)
- training.py, partitions.py: Google's training recipe; evaluation.py, skeleton_metrics.py: VOI, ARE, ERL
- commands.py, train_commands.py, evaluate_commands.py: `connectome ffn ...` and `connectome evaluate`
"""
