"""Volume I/O: open EM image and label volumes in any supported format, write Neuroglancer precomputed layers."""
