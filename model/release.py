"""Saving and loading a GaussianPredictor as a folder: ``model.safetensors`` + ``config.yaml``.

The same folder format serves a checkpoint's exported EMA weights and a ``gavs-release``
release. ``load_predictor`` accepts such a folder, the name of a release shipped inside the package
(``model/releases/NAME``: ``prior-cpu``), or a Hugging Face hub id (fetched through
``huggingface_hub`` only when the user names one). It refuses weights that do not fit their
config, a network other than the one a caller expects, and files whose sha256 does not match
``SHA256SUMS``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors.torch import load_file, save_file

from common.atomic import atomic_path
from model.network import GaussianPredictor, NetworkConfig

FORMAT = "gavs-predictor/1"
WEIGHTS, CONFIG, SUMS = "model.safetensors", "config.yaml", "SHA256SUMS"
# the fields that decide the weights' names and shapes
ARCHITECTURE_FIELDS = ("backbone", "layers", "decoder_channels")
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class ReleaseError(ValueError):
    """A folder or hub id that does not hold a usable predictor; the message says why."""


def architecture(config: NetworkConfig) -> dict:
    return {name: getattr(config, name) for name in ARCHITECTURE_FIELDS}


def describe(config: NetworkConfig) -> str:
    arch = architecture(config)
    return ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in arch.items())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_sums(folder: Path) -> None:
    """``SHA256SUMS`` over every other file in ``folder``, in ``sha256sum -c`` format."""
    lines = [f"{sha256(p)}  {p.name}\n" for p in sorted(folder.iterdir()) if p.is_file() and p.name != SUMS]
    (folder / SUMS).write_text("".join(lines))


def save_predictor(
    net: GaussianPredictor,
    folder: str | os.PathLike,
    extra: dict | None = None,
    fp16: bool = False,
    files: dict[str, str] | None = None,
) -> Path:
    """Write the network (optionally as float16) with its config, plus ``files`` (name -> text).

    The folder appears complete or not at all: it is written beside its destination and renamed.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder, folder=True) as tmp:
        dtype = torch.float16 if fp16 else torch.float32
        state = {
            k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
            for k, v in net.state_dict().items()
        }
        save_file(state, tmp / WEIGHTS, metadata={"format": FORMAT})
        network = asdict(net.config) | {"pretrained": False, "pretrained_path": None}
        network = {k: list(v) if isinstance(v, tuple) else v for k, v in network.items()}
        config = {
            "format": FORMAT,
            "dtype": "float16" if fp16 else "float32",
            "network": network,
            **(extra or {}),
        }
        (tmp / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
        write_sums(tmp)
    return folder


def shipped() -> dict[str, Path]:
    """The releases that ship inside the package, by name."""
    folder = Path(str(resources.files("model") / "releases"))
    found = folder.iterdir() if folder.is_dir() else []
    return {p.name: p for p in sorted(found) if (p / WEIGHTS).is_file()}


def resolve(source: str | os.PathLike) -> Path:
    """A local folder for ``source``: the folder itself, a shipped release's (by name), or a
    hub id's downloaded snapshot."""
    path = Path(source)
    if path.exists():
        if not path.is_dir():
            raise ReleaseError(f"{path}: expected a release folder (with {WEIGHTS} and {CONFIG}), got a file")
        return path
    releases = shipped()
    if str(source) in releases:
        return releases[str(source)]
    if not HUB_ID.match(str(source)):
        names = ", ".join(releases) or "none"
        raise ReleaseError(
            f"{source}: no such folder, no shipped release of that name ({names}), "
            "and not a hub id of the form org/name"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = [WEIGHTS, CONFIG, SUMS, "*.md"]
    try:
        try:  # a copy already in the hub cache is used without touching the network
            return Path(
                snapshot_download(repo_id=str(source), allow_patterns=patterns, local_files_only=True)
            )
        except LocalEntryNotFoundError:
            return Path(snapshot_download(repo_id=str(source), allow_patterns=patterns))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
        raise ReleaseError(
            f"{source}: could not fetch it from the hub ({type(err).__name__}: {err})"
        ) from err


def read_config(folder: Path) -> dict:
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise ReleaseError(f"{folder}: not a release folder (needs {WEIGHTS} and {CONFIG})")
    config = yaml.safe_load((folder / CONFIG).read_text())
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        raise ReleaseError(f"{folder / CONFIG}: format {found!r}, this loader reads {FORMAT!r}")
    return config


def network_config(folder: Path) -> NetworkConfig:
    network = dict(read_config(folder).get("network") or {})
    # older releases name a depth-prior input channel, which never had a producer and is gone
    if network.pop("depth_prior", False):
        raise ReleaseError(
            f"{folder / CONFIG}: built with a depth-prior input channel, which gavs no longer has"
        )
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(NetworkConfig), network))
    except OmegaConfBaseException as err:
        raise ReleaseError(f"{folder / CONFIG}: {str(err).splitlines()[0]}") from err


def check_sums(folder: Path) -> None:
    sums = folder / SUMS
    if not sums.is_file():
        return
    for line in sums.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        path = folder / name.strip()
        if not path.is_file() or sha256(path) != digest:
            raise ReleaseError(f"{path}: missing or corrupt (sha256 differs from {SUMS})")


def load_predictor(
    source: str | os.PathLike, expected: NetworkConfig | None = None, device: str | torch.device = "cpu"
) -> GaussianPredictor:
    """The predictor in a release folder or hub id, in float32 and eval mode.

    With ``expected``, the release must have the same architecture (backbone, layers,
    decoder widths).
    """
    folder = resolve(source)
    config = network_config(folder)
    if expected is not None and architecture(config) != architecture(expected):
        raise ReleaseError(
            f"{source}: the checkpoint is a different network ({describe(config)}); "
            f"this run expects {describe(expected)}"
        )
    check_sums(folder)
    net = GaussianPredictor(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(folder / WEIGHTS).items()}
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        first = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise ReleaseError(
            f"{source}: its weights do not fit its config ({describe(config)}): {first}"
        ) from err
    return net.to(device).eval()
