"""``gavs-release RUN_DIR OUT_DIR``: a run's EMA weights as a self-describing release folder.

The folder holds ``model.safetensors`` (float32, or float16 with ``--fp16``), ``config.yaml``
(the network, training step, validation numbers, data summary), ``README.md`` (the model
card), ``training_config.yaml`` (the run's resolved config) and ``SHA256SUMS``. It loads with
``model.release.load_predictor`` and ``gavs-stabilize --checkpoint``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from model.release import ReleaseError, describe, load_predictor, save_predictor
from train.checkpoint import checkpoints


def model_card(
    name: str, description: str, step: int, validation: dict, data: dict | None, fp16: bool
) -> str:
    lines = [
        f"# {name}",
        "",
        "A feed-forward 3D Gaussian predictor for GaVS-style video stabilization: one frame in, "
        "layered per-pixel Gaussians in the camera's frame out.",
        "",
        f"- Architecture: {description}",
        f"- Training steps: {step} (EMA weights)",
        f"- Weights: {'float16' if fp16 else 'float32'} safetensors; sha256 sums in `SHA256SUMS`",
        "",
        "## Validation (held-out clips, fixed batches)",
        "",
    ]
    if validation:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in validation.items() if k != "step"]
        lines += ["", f"Measured at step {validation.get('step', step)}."]
    else:
        lines.append("No validation shards were configured for this run.")
    lines += ["", "## Training data", ""]
    if data:
        totals = data.get("totals", {})
        lines += [
            f"- Shards: `{data.get('shards')}` (schema version {data.get('schema_version')})",
            f"- {totals.get('clips', '?')} clips, {totals.get('frames', '?')} frames "
            f"from {totals.get('videos', '?')} videos; {totals.get('rejected', 0)} clips rejected",
            f"- Pose methods: {', '.join(f'{k} {v}' for k, v in data.get('pose_methods', {}).items())}",
        ]
    else:
        lines.append("No data manifest was found beside the training shards.")
    lines += [
        "",
        "## Use",
        "",
        "```",
        "gavs-stabilize shaky.mp4 -o stable.mp4 --checkpoint THIS_FOLDER",
        "```",
        "",
        "```python",
        "from model.release import load_predictor",
        "",
        'net = load_predictor("THIS_FOLDER")',
        "```",
        "",
    ]
    return "\n".join(lines)


def release(
    run_dir: Path, out_dir: Path, checkpoint: Path | None = None, fp16: bool = False, force: bool = False
) -> Path:
    if checkpoint is None:
        found = checkpoints(run_dir)
        if not found:
            raise ReleaseError(f"{run_dir}: no checkpoints (expected {run_dir / 'checkpoints' / 'step_*'})")
        checkpoint = found[-1]
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise ReleaseError(f"{out_dir} exists and is not empty; pass --force to replace it")
    net = load_predictor(checkpoint / "ema")
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    manifest = run_dir / "data_manifest.json"
    data = json.loads(manifest.read_text()) if manifest.is_file() else None
    validation = state.get("validation") or {}
    card = model_card(out_dir.name, describe(net.config), state["step"], validation, data, fp16)
    extra = {"step": state["step"], "validation": validation, "data": data, "source": str(checkpoint)}
    files = {"README.md": card, "training_config.yaml": (checkpoint / "config.yaml").read_text()}
    return save_predictor(net, out_dir, extra=yaml.safe_load(json.dumps(extra)), fp16=fp16, files=files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gavs-release",
        description="Turn a training run's latest checkpoint (EMA weights) into a release folder.",
    )
    parser.add_argument("run_dir", type=Path, help="the training run folder (holds checkpoints/)")
    parser.add_argument("out_dir", type=Path, help="the release folder to write")
    parser.add_argument(
        "--checkpoint", type=Path, help="a specific checkpoints/step_* folder (default: latest)"
    )
    parser.add_argument("--fp16", action="store_true", help="store weights as float16 (half the size)")
    parser.add_argument("--force", action="store_true", help="replace an existing, non-empty out_dir")
    args = parser.parse_args(argv)
    try:
        out = release(args.run_dir, args.out_dir, args.checkpoint, args.fp16, args.force)
    except (ReleaseError, OSError) as err:
        print(f"gavs-release: error: {err}", file=sys.stderr)
        return 2
    print(f"released {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
