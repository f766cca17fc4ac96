"""Where training numbers go: always ``RUN_DIR/metrics.jsonl``, plus wandb or tensorboard.

wandb runs offline unless the user has configured it (``WANDB_API_KEY``, a ``wandb login``
entry in ``~/.netrc``, or an explicit ``WANDB_MODE``), so a run never blocks on a login or
the network. A resumed run continues the same wandb run. Only the main process logs.
"""

from __future__ import annotations

import json
import netrc
import os
import uuid
from pathlib import Path

import numpy as np
from accelerate import Accelerator
from torch import Tensor

from common.atomic import write_atomic

TRACKERS = ("wandb", "tensorboard", "none")


def wandb_mode() -> str:
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


def flatten(tree: dict, prefix: str = "") -> dict[str, str | int | float | bool]:
    """Nested config -> ``{"a.b": value}`` with scalar values (tensorboard's hparams need them)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, bool, str)) else str(value)
    return flat


class RunLog:
    def __init__(
        self,
        accelerator: Accelerator,
        tracker: str,
        project: str,
        run_dir: Path,
        config: dict,
        resume_step: int | None,
    ) -> None:
        if tracker not in TRACKERS:
            raise ValueError(f"logging.tracker must be one of {', '.join(TRACKERS)}, got {tracker!r}")
        self.accelerator, self.tracker = accelerator, tracker
        self.path = run_dir / "metrics.jsonl"
        if not accelerator.is_main_process:
            return
        if resume_step is not None and self.path.exists():  # drop lines logged after the checkpoint
            lines = [
                line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= resume_step
            ]
            write_atomic(self.path, "".join(f"{line}\n" for line in lines))
        init_kwargs = {}
        if tracker == "wandb":
            id_file = run_dir / "wandb_id.txt"
            if not id_file.exists():
                write_atomic(id_file, uuid.uuid4().hex[:12])
            run_id = id_file.read_text().strip()
            init_kwargs["wandb"] = {
                "dir": str(run_dir),
                "mode": wandb_mode(),
                "id": run_id,
                "resume": "allow",
                "name": run_dir.name,
            }
        if tracker != "none":
            accelerator.init_trackers(project, config=flatten(config), init_kwargs=init_kwargs)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if not self.accelerator.is_main_process:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.tracker != "none":
            self.accelerator.log(values, step=step)

    def image(self, name: str, image: Tensor, step: int) -> None:
        """``image [3, H, W]`` in [0, 1]."""
        if not self.accelerator.is_main_process or self.tracker == "none":
            return
        if self.tracker == "wandb":
            array = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            self.accelerator.get_tracker("wandb").log_images({name: [array]}, step=step)
        else:
            self.accelerator.get_tracker("tensorboard").log_images({name: image[None]}, step=step)

    def close(self) -> None:
        self.accelerator.end_training()
