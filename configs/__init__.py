"""YAML presets, one folder per job, shipped with the package (``common.config.resolve_preset``)."""
