"""Wall time of the project's own SLURM jobs on a real cluster: prep array, pretraining, release.

    bash .ci/slurm.sh     # a single-node cluster on this machine (root), or use your own
    python bench/slurm.py --work /tmp/slurm-bench --out bench/results/slurm.json [--steps 60]

The same chain as tests/test_slurm.py, without the preemption, at a size that says what a
job costs beyond its work: ``--videos`` synthetic clips prepped by
``slurm/prep_array.sbatch`` as a 2-task array, merged, pretrained by
``slurm/pretrain.sbatch`` (tiny config, 2 tasks, ``--steps``) and released by
``gavs-release`` as a job. Per job: the wall time from sbatch to done, and the time SLURM
says it ran (StartTime to EndTime; whole seconds). Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from common.atomic import write_atomic
from data_prep.merge import merge
from data_prep.synthetic import SyntheticConfig, generate
from data_prep.video import write_video

ROOT = Path(__file__).resolve().parents[1]
SMALL_JOB = ["--nodes=1", "--gpus-per-node=0", "--cpus-per-task=2", "--mem=6G"]  # one 2-core node
PREP = ["max_side=160", "clip_length=16", "clip_stride=16", "shard_max_clips=100", "priors.flow=false"]
TRAIN = ["data.size=[32,56]", "batch_size=2", "num_workers=1", "logging.every=10", "logging.tracker=none"]


def environment() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    extra = {"OMP_NUM_THREADS": "1", "GAVS_PROCS_PER_NODE": "2", "CUDA_VISIBLE_DEVICES": ""}
    return {**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}", **extra}


def run_job(name: str, args: list[str], folder: Path) -> dict:
    """Submit and wait; the job's wall time, SLURM's run time and final state."""
    started = time.perf_counter()
    done = subprocess.run(
        ["sbatch", "--parsable", "--wait", f"--chdir={folder}", *args],
        capture_output=True,
        text=True,
        env=environment(),
    )
    wall = time.perf_counter() - started
    job = done.stdout.strip().split(";")[0]
    if not job:
        raise SystemExit(f"sbatch for {name} failed: {done.stderr.strip()}")
    shown = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True)
    tasks = [dict(p.split("=", 1) for p in line.split() if "=" in p) for line in shown.stdout.splitlines()]
    if done.returncode or not tasks or any(t["JobState"] != "COMPLETED" for t in tasks):
        raise SystemExit(f"{name} (job {job}) did not complete: see the logs in {folder}")
    starts = [datetime.fromisoformat(t["StartTime"]) for t in tasks]
    ends = [datetime.fromisoformat(t["EndTime"]) for t in tasks]
    ran = (max(ends) - min(starts)).total_seconds()
    return {"job": name, "id": job, "tasks": len(tasks), "wall_s": wall, "slurm_run_s": ran}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, required=True, help="a fresh folder for videos, shards and runs")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "slurm.json")
    parser.add_argument("--videos", type=int, default=4, help="synthetic clips to prep (2 tasks)")
    parser.add_argument("--steps", type=int, default=60, help="pretraining steps")
    args = parser.parse_args()
    if subprocess.run(["sinfo", "-h"], capture_output=True).returncode:
        parser.error("no SLURM cluster answers sinfo (start one with: bash .ci/slurm.sh)")
    videos = args.work / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for seed in range(args.videos):
        clip = generate(SyntheticConfig(width=192, height=108, num_frames=32, seed=seed), progress=False)
        write_video(videos / f"scene{seed}.mp4", clip.frames, fps=30, crf=0)
    data = args.work / "dataset"
    prep = ["--array=0-1", "--cpus-per-task=1", "--mem=3G", str(ROOT / "slurm" / "prep_array.sbatch")]
    rows = [run_job("prep array (2 tasks)", [*prep, str(videos), str(data), *PREP], args.work)]
    started = time.perf_counter()
    clips = merge(data, sorted(data.glob("part-*")))["totals"]["clips"]
    rows.append({"job": "merge (no job)", "id": "-", "tasks": 0, "wall_s": time.perf_counter() - started})
    shards = f"data.shards={data}/part-{{0000..0001}}/train-000000.tar"
    run = args.work / "run"
    train = [str(ROOT / "configs" / "pretrain" / "tiny-cpu.yaml"), shards, *TRAIN, f"max_steps={args.steps}"]
    train += ["checkpoint_every=1000", f"run_dir={run}"]
    script = str(ROOT / "slurm" / "pretrain.sbatch")
    rows.append(run_job(f"pretrain (2 tasks, {args.steps} steps)", [*SMALL_JOB, script, *train], args.work))
    release = ["--mem=2G", "--wrap", f"gavs-release {run} {args.work / 'release'} --fp16"]
    rows.append(run_job("release", release, args.work))

    print(f"{args.videos} videos, {clips} clips\n")
    print("| job | tasks | wall s (sbatch to done) | SLURM run s |\n|---|---|---|---|")
    for row in rows:
        ran = "-" if row.get("slurm_run_s") is None else f"{row['slurm_run_s']:.0f}"
        print(f"| {row['job']} | {row['tasks']} | {row['wall_s']:.1f} | {ran} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, json.dumps({"videos": args.videos, "clips": clips, "jobs": rows}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
