"""Typed job configs: a dataclass is the source of truth, a YAML preset and ``key.sub=value``
overrides are merged onto it (OmegaConf structured configs), and unknown keys, values of the
wrong type and choices outside a ``Literal`` are errors.

A field's docstring (the string literal right after it, nerfstudio's convention) is its help
text: ``add_flags`` turns chosen fields into command-line options whose type, choices and help
come from the dataclass, so a CLI never repeats them. Presets ship inside the ``configs``
package, so ``--config NAME`` works from an installed wheel as well as from a checkout.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import itertools
import os
import textwrap
import typing
from dataclasses import MISSING, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Literal, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A preset or override that does not fit the job's config; the message names it."""


def preset_names(job: str) -> list[str]:
    """The presets shipped for ``job`` (``prep``, ``pretrain``, ``stabilize``)."""
    folder = resources.files("configs") / job
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_preset(job: str, preset: str | os.PathLike) -> Path:
    """``preset`` as a YAML path: a file that exists, or the name of one of ``job``'s presets."""
    path = Path(preset)
    if path.is_file():
        return path
    shipped = resources.files("configs") / job / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path() and shipped.is_file():
        return Path(str(shipped))
    raise ConfigError(
        f"{preset}: no such config file or {job} preset (presets: {', '.join(preset_names(job))})"
    )


def load_config(
    schema: type[T],
    preset: str | os.PathLike | list[str | os.PathLike] | None = None,
    overrides: list[str] | None = None,
) -> T:
    """An instance of ``schema`` from its defaults, optional YAML presets (a path, or a list
    of them applied in turn), then overrides.

    A dataclass's ``__post_init__`` may raise ConfigError for values no type can express
    (ranges); it runs here, so a bad value fails before any work starts.
    """
    layers = [OmegaConf.structured(schema)]
    presets = preset if isinstance(preset, list) else [] if preset is None else [preset]
    for path in map(Path, presets):
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
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        message = str(err).splitlines()[0]
        key = getattr(err, "full_key", None)
        where = f"config: {key}: " if key and not message.startswith(key) else "config: "
        raise ConfigError(
            where + message + (f" (from {', '.join(map(str, presets))})" if presets else "")
        ) from err


def config_yaml(config) -> str:
    """The fully resolved config, as written beside every run's outputs."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def field_docs(schema: type) -> dict[str, str]:
    """Each field's docstring: the string literal that follows its line in the class body (or
    in a base dataclass's, for the fields it inherits)."""
    docs = {}
    for cls in reversed([c for c in schema.__mro__ if is_dataclass(c)]):
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
        for node, after in itertools.pairwise(body):
            is_doc = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and is_doc:
                docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


def _flag_type(hint) -> tuple[type, tuple | None]:
    """The argparse type and choices of a field's annotation (``X | None`` counts as ``X``)."""
    if typing.get_origin(hint) is Literal:
        return str, typing.get_args(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return (args[0] if args else hint), None


def add_flags(parser: argparse.ArgumentParser, schema: type, names: list[str]) -> None:
    """``--name`` options for top-level fields of ``schema``, each defaulting to None (unset)."""
    hints = typing.get_type_hints(schema)
    docs = field_docs(schema)
    defaults = {f.name: f.default for f in fields(schema) if f.default is not MISSING}
    for name in names:
        kind, choices = _flag_type(hints[name])
        flag, help = f"--{name.replace('_', '-')}", docs.get(name, "")
        if kind is bool:  # a switch that sets the field true
            parser.add_argument(flag, dest=name, action="store_const", const=True, help=help)
            continue
        default = f" (default: {defaults[name]})" if defaults.get(name) is not None else ""
        parser.add_argument(flag, type=kind, choices=choices, help=help + default)


def flag_overrides(args: argparse.Namespace, names: list[str]) -> list[str]:
    """The flags that were given, as ``name=value`` overrides."""
    return [f"{name}={getattr(args, name)}" for name in names if getattr(args, name) is not None]
