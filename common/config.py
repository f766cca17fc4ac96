"""Typed job configs: a dataclass is the source of truth, a YAML preset and ``key.sub=value``
overrides are merged onto it (OmegaConf structured configs), and unknown keys are errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A preset or override that does not fit the job's config; the message names it."""


def load_config(
    schema: type[T], preset: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> T:
    """An instance of ``schema`` from its defaults, an optional YAML preset, then overrides."""
    layers = [OmegaConf.structured(schema)]
    if preset is not None:
        path = Path(preset)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            layers.append(OmegaConf.load(path))
        except Exception as err:  # YAML syntax errors come in several types
            raise ConfigError(f"{path}: not valid YAML ({err})") from err
    bad = [o for o in overrides or [] if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must look like key.sub=value, got {bad[0]!r}")
    try:
        layers.append(OmegaConf.from_dotlist(list(overrides or [])))
        return OmegaConf.to_object(OmegaConf.merge(*layers))
    except OmegaConfBaseException as err:
        message = str(err).splitlines()[0]
        raise ConfigError(f"config: {message}" + (f" (from {preset})" if preset else "")) from err


def config_yaml(config) -> str:
    """The fully resolved config, as written beside every run's outputs."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))
