"""Training throughput and peak memory of a pretraining config.

    python bench/training.py                                # tiny-cpu on synthetic shards
    python bench/training.py --config base --frame-size 448x256   # on a GPU

Without ``--shards`` it builds shards from synthetic clips first (gavs-prep's real pipeline,
at ``--frame-size``; crops are resized to the config's ``data.size``, so small frames only
cost detail, not speed). It then trains for ``--steps`` steps in a temporary run folder,
logging every ``--window`` steps, and reports the median samples/s over the windows after
the first (which holds start-up and the first data segment) and the peak memory: CUDA's
max allocated on a GPU, the process's max resident set on the CPU. Prints a markdown table
and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from common.atomic import write_atomic
from common.config import load_config, resolve_preset
from data_prep.build import PrepConfig, build
from data_prep.synthetic import SyntheticConfig, generate
from data_prep.video import write_video
from train.config import TrainConfig
from train.loop import train

ROOT = Path(__file__).resolve().parents[1]


def synthetic_shards(folder: Path, width: int, height: int, clips: int = 4) -> str:
    videos = folder / "videos"
    videos.mkdir(parents=True)
    for seed in range(clips):
        clip = generate(SyntheticConfig(width=width, height=height, num_frames=16, seed=seed), progress=False)
        write_video(videos / f"s{seed}.mp4", clip.frames, fps=30)
    prep = [
        f"max_side={max(width, height)}",
        "clip_length=16",
        "clip_stride=16",
        "shard_max_clips=1",
        "priors.flow=false",
    ]
    config = load_config(PrepConfig, None, prep)
    build(str(videos), folder / "shards", config, progress=False)
    return str(folder / "shards" / f"train-{{000000..{clips - 1:06d}}}.tar")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="tiny-cpu", help="a pretrain preset name or a YAML file")
    parser.add_argument("--shards", help="training shards (default: synthetic ones, built first)")
    parser.add_argument("--frame-size", default="128x72", help="synthetic frame size WxH")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--window", type=int, default=10, help="steps per throughput sample")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train.json")
    parser.add_argument("overrides", nargs="*", help="gavs-train config overrides")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gavs-train-bench-") as tmp:
        shards = args.shards
        if shards is None:
            width, height = (int(v) for v in args.frame_size.split("x"))
            shards = synthetic_shards(Path(tmp), width, height)
        config: TrainConfig = load_config(
            TrainConfig,
            resolve_preset("pretrain", args.config),
            [
                *args.overrides,
                f"run_dir={tmp}/run",
                f"data.shards={shards}",
                f"max_steps={args.steps}",
                f"logging.every={args.window}",
                "logging.tracker=none",
                f"checkpoint_every={args.steps}",
                "validation.shards=''",
            ],
        )
        start = time.perf_counter()
        train(config)
        wall = time.perf_counter() - start
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]

    windows = [r["perf/samples_per_s"] for r in rows[1:]]
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({platform.processor() or 'x86_64'})"
    )
    result = {
        "config": args.config,
        "overrides": args.overrides,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "batch_size": config.batch_size,
        "size": list(config.data.size),
        "backbone": config.network.backbone,
        "mixed_precision": config.mixed_precision,
        "steps": args.steps,
        "samples_per_s_median": statistics.median(windows),
        "samples_per_s_windows": windows,
        "step_s_median": statistics.median(r["perf/step_s"] for r in rows[1:]),
        "peak_memory_gb": max(r["perf/peak_memory_gb"] for r in rows),
        "wall_s": wall,
    }
    print("| config | device | backbone | size | batch | precision | samples/s | s/step | peak memory |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {result['config']} {' '.join(args.overrides)} | {device} | {result['backbone']} | "
        f"{result['size'][0]}x{result['size'][1]} | {result['batch_size']} | {result['mixed_precision']} | "
        f"{result['samples_per_s_median']:.2f} | {result['step_s_median']:.3f} | "
        f"{result['peak_memory_gb']:.2f} GB |"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
