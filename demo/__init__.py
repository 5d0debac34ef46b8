"""The demo: a workspace built end to end (import, FFN, meshes, graph, synapses, users) and served; above `server/`."""
