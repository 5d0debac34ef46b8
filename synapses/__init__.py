"""Synapse detection, partner assignment, evaluation and Neuroglancer contact spheres."""
