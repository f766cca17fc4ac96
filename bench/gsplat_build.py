"""Time the build of gsplat's CUDA kernels, which needs nvcc but no GPU.

    TORCH_CUDA_ARCH_LIST=9.0 python bench/gsplat_build.py [--jobs 2] [--out bench/results/gsplat-build.json]

Builds into a fresh extensions folder (so nothing cached is timed), in a child process that
imports ``model.rasterize_gsplat.build_kernels``, the call gavs makes on a GPU machine before
its first gsplat render. A compile error shows up here, before GPU time is spent on it.
Prints a markdown table and writes JSON: wall seconds, the child's peak RSS, the arch list,
the nvcc and torch versions, and the kernels' size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common.atomic import write_atomic

ROOT = Path(__file__).resolve().parents[1]
BUILD = "from model.rasterize_gsplat import build_kernels as b; raise SystemExit(0 if b() else 1)"


def nvcc_version() -> str:
    try:
        out = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "none"
    return out.strip().splitlines()[-1]


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="parallel compile jobs (MAX_JOBS)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gsplat-build.json")
    args = parser.parse_args()
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if not arch and not torch.cuda.is_available():
        parser.error("no GPU here: set TORCH_CUDA_ARCH_LIST (9.0 for an H100 or H200)")
    with tempfile.TemporaryDirectory(prefix="gsplat-build-") as folder:
        env = os.environ | {
            "TORCH_EXTENSIONS_DIR": folder,
            "MAX_JOBS": str(args.jobs),
            "PYTHONPATH": str(ROOT),
        }
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", BUILD], env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        libraries = list(Path(folder).glob("*/*.so"))
        size_mb = sum(p.stat().st_size for p in libraries) / 1e6
    if done.returncode:
        print(done.stderr[-4000:], file=sys.stderr)
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
    result = {
        "ok": done.returncode == 0,
        "seconds": seconds,
        "jobs": args.jobs,
        "arch": arch or "this GPU",
        "peak_rss_gb": peak_gb,
        "kernels_mb": size_mb,
        "nvcc": nvcc_version(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    print("| arch | jobs | result | wall s | peak RSS GB | kernels MB | nvcc |")
    print("|---|---|---|---|---|---|---|")
    status = "built" if result["ok"] else "FAILED"
    cells = [
        result["arch"],
        args.jobs,
        status,
        f"{seconds:.0f}",
        f"{peak_gb:.2f}",
        f"{size_mb:.1f}",
        result["nvcc"],
    ]
    print("| " + " | ".join(map(str, cells)) + " |")
    write_atomic(args.out, json.dumps(result, indent=2))
    raise SystemExit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
