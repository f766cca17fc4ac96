"""``gavs-train``: pretrain the Gaussian predictor from clip shards (resumes by itself)."""

from __future__ import annotations

import argparse
import sys

from common.config import ConfigError, load_config, preset_names, resolve_preset
from data_prep.locations import LocationError
from data_prep.schema import SchemaError
from model.release import ReleaseError
from train.checkpoint import CheckpointError
from train.config import TrainConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gavs-train",
        description=(
            "Pretrain the Gaussian predictor on WebDataset clip shards. Run it with plain python for one "
            "process, or under `accelerate launch` for several (DDP). A run_dir that already holds "
            "checkpoints is resumed from the latest one."
        ),
        epilog=(
            f"Presets for --config: {', '.join(preset_names('pretrain'))} (or a YAML file): tiny-cpu runs in "
            "minutes on a laptop CPU, base is the GPU recipe."
        ),
    )
    parser.add_argument("--config", help="a preset name (tiny-cpu, base) or a YAML file")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="key.sub=value overrides, e.g. data.shards='shards/train-{000000..000009}.tar'",
    )
    args = parser.parse_args(argv)
    try:
        preset = resolve_preset("pretrain", args.config) if args.config else None
        config = load_config(TrainConfig, preset, args.overrides)
        from train.loop import train  # heavy imports only once the config is known to be good

        state = train(config)
    except (ConfigError, SchemaError, CheckpointError, ReleaseError, LocationError, ValueError) as err:
        print(f"gavs-train: error: {err}", file=sys.stderr)
        return 2
    if not state["main_process"]:
        return 0
    validation = state.get("validation") or {}
    numbers = ", ".join(f"{k} {v:.3f}" for k, v in validation.items() if k != "step")
    print(f"step {state['step']} in {state['run_dir']}" + (f"; validation: {numbers}" if numbers else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
