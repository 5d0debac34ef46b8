"""The Neuroglancer proofreading server: per-user viewers and the HTTP API on one tornado process."""
