"""The proofreading store: supervoxel graph, edit log, roots over time, connectivity export."""
