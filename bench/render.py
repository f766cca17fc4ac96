"""Renderer throughput: forward and forward+backward images/s per backend and scene size.

    python bench/render.py                      # all sizes, every backend this machine has
    python bench/render.py --sizes small --repeats 5

Prints a markdown table and writes JSON (default: bench/results/render-<device>.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from common.atomic import write_atomic
from model.random_scene import random_scene
from model.rasterize_cpu import cpu_kernels_available
from model.rasterize_gsplat import gsplat_available
from model.render import render

SIZES = {
    "working": (192, 108, 40_000),  # finetuning's renders at the default working size
    "small": (128, 128, 16_000),
    "medium": (512, 512, 260_000),
    "1080p": (1920, 1080, 2_000_000),
}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_backend(backend: str, device: str, width: int, height: int, count: int, repeats: int) -> dict:
    gaussians, K = random_scene(count, width, height, seed=0, device=device)
    viewmat = torch.eye(4, device=device)[None]
    Ks = K[None]
    params = [gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, gaussians.colors]

    def forward():
        with torch.no_grad():
            render(gaussians, viewmat, Ks, width, height, backend=backend)

    def forward_backward():
        for p in params:
            p.grad = None
            p.requires_grad_(True)
        out = render(gaussians, viewmat, Ks, width, height, backend=backend)
        (out.color.mean() + out.depth.mean()).backward()

    result = {"backend": backend, "device": device, "width": width, "height": height, "gaussians": count}
    for name, fn in (("forward", forward), ("forward_backward", forward_backward)):
        fn()  # warm-up: JIT compilation, allocator, caches
        _sync(device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        result[f"{name}_median_s"] = median
        result[f"{name}_images_per_s"] = 1.0 / median
        if device == "cuda":
            result[f"{name}_peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default=",".join(SIZES), help=f"comma-separated subset of {', '.join(SIZES)}"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell (the median is reported)")
    parser.add_argument("--backends", default="auto", help="'auto' (every backend here) or a comma list")
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    args = parser.parse_args()

    sizes = [s.strip() for s in args.sizes.split(",")]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {list(SIZES)}")
    if args.backends == "auto":
        cells = [("torch", "cpu")] + ([("cpu", "cpu")] if cpu_kernels_available() else [])
        if torch.cuda.is_available():
            cells.append(("torch", "cuda"))
            if gsplat_available():
                cells.append(("gsplat", "cuda"))
    else:
        cells = [
            (b, "cuda" if b == "gsplat" or torch.cuda.is_available() else "cpu")
            for b in args.backends.split(",")
        ]

    device_name = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    results = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device: {device_name}\n")
    print("| backend | device | size | Gaussians | forward img/s | fwd+bwd img/s |")
    print("|---|---|---|---|---|---|")
    for size in sizes:
        width, height, count = SIZES[size]
        for backend, device in cells:
            r = time_backend(backend, device, width, height, count, args.repeats)
            results.append(r)
            fwd, both = r["forward_images_per_s"], r["forward_backward_images_per_s"]
            print(
                f"| {backend} | {device} | {width}x{height} | {count:,} | {fwd:.3g} | {both:.3g} |",
                flush=True,
            )

    out = (
        args.out
        or Path(__file__).parent / "results" / f"render-{'cuda' if torch.cuda.is_available() else 'cpu'}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device_name,
        "repeats": args.repeats,
    }
    write_atomic(out, json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
