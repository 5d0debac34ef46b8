"""The `connectome` command line: one entry point, commands registered by each package."""
