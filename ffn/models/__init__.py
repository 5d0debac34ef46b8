"""Model files that ship with connectome (data, not code); see README.md here."""
