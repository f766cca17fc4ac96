"""Candidates for the fast CPU renderer, side by side: CPU time of one forward and backward.

    python bench/render_candidates.py

One thread and CPU time (not wall time), so other work on the machine changes the numbers
little. The scene is bench/render.py's working size (192x108, 40k Gaussians). Candidates:
the PyTorch reference, ``torch.compile`` of it (its first call compiles) and the C++
backend. Prints a markdown table and writes JSON (default:
bench/results/render-candidates.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from common.atomic import write_atomic
from model.random_scene import random_scene
from model.rasterize_cpu import rasterize_cpu
from model.rasterize_torch import rasterize_torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "render-candidates.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    width, height = 192, 108
    g, K = random_scene(40_000, width, height)
    for leaf in (g.means, g.scales, g.opacities, g.colors):
        leaf.requires_grad_(True)
    candidates = {
        "reference": rasterize_torch,
        "torch.compile": torch.compile(rasterize_torch, dynamic=True),
        "cpu (C++)": rasterize_cpu,
    }

    def run(rasterize) -> None:
        image, depth, _ = rasterize(
            g.means[None], g.quats[None], g.scales[None], g.opacities[None], g.colors[None],
            torch.eye(4)[None], K[None], width, height, 0.01, 1e10,
        )  # fmt: skip
        (image.mean() + depth.mean()).backward()

    rows = []
    for name, rasterize in candidates.items():
        start = time.perf_counter()
        run(rasterize)  # first call: compiling, allocator
        first = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
            start = time.process_time()
            run(rasterize)
            times.append(time.process_time() - start)
        median_ms = 1e3 * statistics.median(times)
        rows.append({"candidate": name, "first_call_s": first, "fwd_bwd_cpu_ms": median_ms})
    print("| candidate | first call s | fwd+bwd CPU ms | speed-up |\n|---|---|---|---|")
    for row in rows:
        speedup = rows[0]["fwd_bwd_cpu_ms"] / row["fwd_bwd_cpu_ms"]
        cells = f"{row['first_call_s']:.1f} | {row['fwd_bwd_cpu_ms']:.0f} | {speedup:.1f}x"
        print(f"| {row['candidate']} | {cells} |")
    write_atomic(args.out, json.dumps({"torch": torch.__version__, "rows": rows}, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
