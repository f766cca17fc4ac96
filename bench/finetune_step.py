"""Seconds per finetuning step on the CPU, per render backend, side by side.

    python bench/finetune_step.py --steps 12 --backends torch,cpu

The clip is the synthetic generator's (its true poses, so no SfM runs) at the working size.
Each backend gets its own network (the same seed), optimiser and flows (computed once for
the run before the first step, timed apart: they are a per-clip cost now); the steps
alternate between backends, so a busy machine slows them alike, and the first step of each
(warm-up: kernel build, allocator, caches) is left out. Reports the median step time per
backend and each one's speed-up over the first. Settings are FinetuneConfig's defaults
(batch 5, 4 neighbours) unless overridden.

Prints a markdown table and writes JSON (default: bench/results/finetune-step-cpu.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from common.atomic import write_atomic
from data_prep.schema import ClipPoses
from data_prep.synthetic import SyntheticConfig, generate
from infer.finetune import ClipFinetuner, FinetuneConfig, read_terms
from model.network import GaussianPredictor, NetworkConfig

ROOT = Path(__file__).resolve().parents[1]


def tuners(backends: list[str], width: int, height: int, config: FinetuneConfig) -> dict[str, ClipFinetuner]:
    clip = generate(SyntheticConfig(width=width, height=height, num_frames=30, seed=3), progress=False)
    poses = ClipPoses(width, height, clip.K, clip.c2w, np.arange(len(clip.frames)), "ground truth")
    out = {}
    for backend in backends:
        torch.manual_seed(0)
        net = GaussianPredictor(NetworkConfig()).train()
        out[backend] = ClipFinetuner(
            net, clip.frames, poses, config, pad=0.12, backend=backend, device=torch.device("cpu")
        )
    return out


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--backends", default="torch,cpu", help="comma list; the first is the yardstick")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per backend (after one warm-up)")
    parser.add_argument("--size", default="192x108", help="working size WxH")
    parser.add_argument("--batch", type=int, default=FinetuneConfig.batch)
    parser.add_argument("--neighbours", type=int, default=FinetuneConfig.neighbours)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "finetune-step-cpu.json")
    args = parser.parse_args()
    backends = args.backends.split(",")
    width, height = (int(v) for v in args.size.split("x"))
    config = FinetuneConfig(batch=args.batch, neighbours=args.neighbours, min_steps=args.steps + 1)
    runs = tuners(backends, width, height, config)
    started = time.perf_counter()
    for tuner in runs.values():  # every flow the run compares, once, before the first step
        tuner.compute_flows()
    flows_s = (time.perf_counter() - started) / len(runs)
    times: dict[str, list[float]] = {b: [] for b in backends}
    losses: dict[str, list[float]] = {b: [] for b in backends}
    for step in range(args.steps + 1):
        for backend, tuner in runs.items():
            start = time.perf_counter()
            [terms] = read_terms([tuner.step(step)])  # waits for the device, inside the timing
            if step:
                times[backend].append(time.perf_counter() - start)
            losses[backend].append(terms["total"])
    first = statistics.median(times[backends[0]])
    rows = [
        {
            "backend": b,
            "median_s": statistics.median(times[b]),
            "speedup": first / statistics.median(times[b]),
            "times_s": times[b],
            "losses": losses[b],
        }
        for b in backends
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {width}x{height}, "
          f"batch {args.batch}, {args.neighbours} neighbours, {args.steps} steps; "
          f"the run's flows, computed before the first step: {flows_s:.2f} s\n")  # fmt: skip
    print("| backend | s/step (median) | speed-up | loss after the last step |")
    print("|---|---|---|---|")
    for row in rows:
        cells = f"{row['median_s']:.2f} | {row['speedup']:.2f}x | {row['losses'][-1]:.5f}"
        print(f"| {row['backend']} | {cells} |")
    meta = {"cpu": platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__}
    record = {"meta": meta, "size": [width, height], "batch": args.batch, "neighbours": args.neighbours}
    record["flows_s"] = flows_s
    write_atomic(args.out, json.dumps(record | {"rows": rows}, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
