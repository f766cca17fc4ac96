"""Checkpoints: ``accelerator.save_state`` plus our own small files, written atomically.

``RUN_DIR/checkpoints/step_00001000/`` holds accelerate's state (model, optimizer, EMA, RNG
states), ``trainer_state.json`` (step, world size, last validation), ``data_rank{R}.json``
(each rank's stream position and the shards it has read), the run's ``config.yaml``, and
``ema/``: the EMA network as a release-format folder that ``load_predictor`` reads directly.
A checkpoint is written under a temporary name and renamed when every rank is done, so a
preempted save never leaves a checkpoint that looks complete.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import yaml
from accelerate import Accelerator

from common.atomic import partial_path, remove, replace
from model.network import GaussianPredictor, NetworkConfig
from model.release import architecture, describe, save_predictor

STEP_DIR = re.compile(r"^step_(\d{8})$")


class CheckpointError(ValueError):
    """A checkpoint that cannot continue this run; the message says why."""


def checkpoints(run_dir: Path) -> list[Path]:
    folder = run_dir / "checkpoints"
    found = [p for p in folder.iterdir() if STEP_DIR.match(p.name)] if folder.is_dir() else []
    return sorted(found)


def save_checkpoint(
    accelerator: Accelerator,
    run_dir: Path,
    step: int,
    trainer_state: dict,
    data_state: dict,
    ema_net: GaussianPredictor,
    config_yaml: str,
    keep: int,
) -> Path:
    final = run_dir / "checkpoints" / f"step_{step:08d}"
    tmp = partial_path(final)
    if accelerator.is_main_process:
        remove(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    (tmp / f"data_rank{accelerator.process_index}.json").write_text(json.dumps(data_state))
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
        (tmp / "config.yaml").write_text(config_yaml)
        save_predictor(ema_net, tmp / "ema", extra={"step": step})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace(tmp, final)
        for old in checkpoints(run_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def check_compatible(checkpoint: Path, network: NetworkConfig) -> None:
    """Refuse to resume from a checkpoint of another architecture (before touching any state)."""
    saved = yaml.safe_load((checkpoint / "config.yaml").read_text()).get("network", {})
    theirs = NetworkConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    if architecture(theirs) != architecture(network):
        raise CheckpointError(
            f"{checkpoint} holds a different network ({describe(theirs)}); this config asks for "
            f"{describe(network)}. Use another run_dir, or the checkpoint's network settings."
        )


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, network: NetworkConfig) -> tuple[dict, dict]:
    """Restore accelerate's state; return the trainer state and this rank's data state."""
    check_compatible(checkpoint, network)
    accelerator.load_state(str(checkpoint))
    trainer_state = json.loads((checkpoint / "trainer_state.json").read_text())
    data_file = checkpoint / f"data_rank{accelerator.process_index}.json"
    data_state = json.loads(data_file.read_text()) if data_file.exists() else {}
    return trainer_state, data_state
