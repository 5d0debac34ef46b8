"""Flood-Filling Networks in PyTorch: model, Google checkpoint import, inference, training.

- model.py: the convstack 3D network, FFNConfig, self-describing model files (load_model/save_model)
- tf_checkpoint.py: TensorFlow tensor-bundle reader and Google weight import (no TensorFlow needed)
- options.py: inference options from our TOML or Google's InferenceRequest pbtxt
- inference.py: Canvas (Google's inference semantics) and the batched driver; segment_subvolume
- seeds.py: seed policies; forward.py: precision/layout/device; tasks.py: overlapping subvolume tasks
- consensus.py: oversegmentation consensus; segment_run.py + commands.py: `connectome ffn ...`
"""
