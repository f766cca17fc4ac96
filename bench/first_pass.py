"""The render's first pass (each frame's depth for the neighbour fill) from the frame alone
against the padded canvas: how far the depth over the frame's own pixels moves, and the time.

    python bench/first_pass.py CLIP [--frames 24] [--pads 0.12 0.16 0.22] [--checkpoint prior-cpu]

Takes ``--frames`` frames spread over CLIP at the working size (the longer side ``--side``)
and predicts their depth with the network of ``--checkpoint``: on the padded canvas at each
of ``--pads`` (the adaptive canvas's range), and on the frame alone. For each pad it gives
the relative depth difference |a - b| / b over the frames' own pixels (median and 90th
percentile) between the frame alone and that canvas, and, as the scale to judge it by,
between that canvas and the smallest pad's: the difference the canvas's size already makes.
Times are the median of ``--repeats`` forwards of a batch of 4, after one warm-up. Prints a
markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from common.atomic import write_atomic
from data_prep.ingest import ingest
from infer.canvas import pad_amounts, pad_canvas
from model.network import GaussianPredictor
from model.release import load_predictor


def own_depth(net: GaussianPredictor, images: Tensor, K: Tensor, pad: float | None) -> Tensor:
    """``[B, H, W]`` first-layer depth over the frames' own pixels, from the canvas padded
    by ``pad`` (None: the frame alone)."""
    if pad is None:
        return net(images, K).depth[:, 0]
    height, width = images.shape[-2:]
    rows, cols = pad_amounts(height, width, pad)
    padded, valid, K_pad = pad_canvas(images, K, pad)
    return net(padded, K_pad, valid).depth[:, 0, rows : rows + height, cols : cols + width]


def relative(a: Tensor, b: Tensor) -> dict[str, float]:
    rel = ((a - b).abs() / b).flatten()
    return {"median": float(rel.median()), "p90": float(rel.quantile(0.9))}


def seconds(net: GaussianPredictor, images: Tensor, K: Tensor, pad: float | None, repeats: int) -> float:
    own_depth(net, images, K, pad)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        own_depth(net, images, K, pad)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("clip", type=Path)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--side", type=int, default=320, help="working size: the longer side in pixels")
    parser.add_argument("--pads", type=float, nargs="+", default=[0.12, 0.16, 0.22])
    parser.add_argument("--checkpoint", default="prior-cpu", help="a release folder, shipped name or hub id")
    parser.add_argument("--focal", type=float, default=0.72, help="focal length as a share of the width")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "first-pass.json")
    args = parser.parse_args()
    frames = ingest(args.clip, max_side=args.side).frames
    picked = frames[np.linspace(0, len(frames) - 1, args.frames).round().astype(int)]
    images = torch.from_numpy(picked).permute(0, 3, 1, 2).float().div(255)
    height, width = images.shape[-2:]
    f = args.focal * width
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]]).expand(len(images), 3, 3)
    net = load_predictor(args.checkpoint)
    alone = torch.cat([own_depth(net, chunk, K[: len(chunk)], None) for chunk in images.split(4)])
    canvases = {
        pad: torch.cat([own_depth(net, chunk, K[: len(chunk)], pad) for chunk in images.split(4)])
        for pad in args.pads
    }
    smallest = canvases[min(args.pads)]
    batch, K4 = images[:4], K[:4]
    rows = [
        {
            "pad": pad,
            "alone_vs_canvas": relative(alone, depth),
            "canvas_vs_smallest_pad": relative(depth, smallest),
            "canvas_s": seconds(net, batch, K4, pad, args.repeats),
        }
        for pad, depth in canvases.items()
    ]
    alone_s = seconds(net, batch, K4, None, args.repeats)
    print(f"{args.clip.name}: {len(images)} frames at {width}x{height}; alone {alone_s:.3f} s a batch of 4\n")
    print(f"| pad | alone vs canvas: median, p90 | canvas vs pad {min(args.pads)}: median, p90 | canvas s |")
    print("|---|---|---|---|")
    for row in rows:
        a, c = row["alone_vs_canvas"], row["canvas_vs_smallest_pad"]
        print(
            f"| {row['pad']:.2f} | {a['median']:.4f}, {a['p90']:.3f} | {c['median']:.4f}, {c['p90']:.3f} "
            f"| {row['canvas_s']:.3f} |"
        )
    payload = {"clip": str(args.clip), "frames": len(images), "checkpoint": args.checkpoint}
    write_atomic(args.out, json.dumps({**payload, "alone_s": alone_s, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
