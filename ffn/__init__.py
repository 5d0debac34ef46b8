"""Flood-Filling Networks in PyTorch: model, Google checkpoint import, inference, training."""
