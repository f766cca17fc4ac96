"""Where our output's flicker comes from: the stabilized clip with one suspected cause removed
at a time (issue 17).

    python bench/flicker_causes.py CLIP [--max-frames 60] [--work W] [--out JSON] [KEY=VALUE ...]

gavs-stabilize runs once at the default setting (KEY=VALUE overrides its config); each variant
then renders again from the same cached poses and network, with one cause taken away:

- ``detail of +-1``: the detail transfer averages in the neighbours' detail where it agrees
  with the source's (``render.detail_offsets=[1]``), so the input's noise and each frame's
  resampling phase pass into the output averaged over three frames; this and the next three
  add a fix rather than take a cause away;
- ``detail of +-1 and 2``: the agreeing detail of the frames two away joins too;
- ``agreement N levels``: ``detail of +-1`` with the neighbours' detail weighing 1/e at a
  difference of N gray levels (``infer.compose.AGREEMENT``), not 8: a smaller scale trusts
  them less;
- ``neighbours' low band only``: ``detail of +-1`` averaging only the band below a Gaussian of
  1 output pixel, the source's own detail above it;
- ``no neighbour fill``: no neighbour pixels in the padded canvas and no fused neighbour
  Gaussians (``render.canvas_offsets=[] render.fusion_offsets=[]``), so the padding is the
  network's extrapolation alone and cannot change with what the neighbours saw;
- ``source wherever seen``: the blend takes the input wherever the source frame contributes
  to the pixel at all, instead of ramping over ``infer.compose.SOURCE_RAMP``, so the blend
  weight cannot vary from frame to frame where the source is seen;
- ``one depth a frame``: the detail transfer warps the input through each frame's median
  rendered depth (a homography) instead of the rendered depth map, so per-frame depth
  differences cannot move the detail (the render itself is unchanged);
- ``depth blurred S px``: the same, through the rendered inverse depth blurred by a Gaussian
  of S working-size pixels, which keeps the depth's large-scale shape (parallax) and drops its
  pixel-scale differences between frames;
- ``bilinear sampling``: the input sampled bilinearly instead of by Lanczos; this shows the
  resampling's share, at the cost of sharpness (bench/flicker.py measures it on the input).

Each output is scored against the input by ``evaluation.metrics.evaluate`` (flicker, sharpness,
jitter) and by exposure flicker: the mean absolute change of mean gray level between consecutive
frames. The variants patch the named module attributes for the duration of their render only:
they are diagnoses, not options. Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.transforms.functional import gaussian_blur

import infer.compose
import infer.rerender
from common.atomic import write_atomic
from data_prep.video import read_video
from evaluation.metrics import evaluate, to_gray
from infer.presets import configured
from infer.stabilize import StabilizeConfig, stabilize


@contextmanager
def patched(patch: tuple[object, str, object] | None) -> Iterator[None]:
    """``owner.name = value`` while the block runs (nothing for None)."""
    if patch is None:
        yield
        return
    owner, name, value = patch
    before = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, before)


def bilinear(frames: np.ndarray, uv: torch.Tensor) -> torch.Tensor:
    """``infer.compose.resample`` with bilinear instead of Lanczos sampling."""
    maps = (uv - 0.5).permute(0, 2, 3, 1).float().cpu().numpy()
    sampled = np.stack(
        [
            cv2.remap(f, m[..., 0], m[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            for f, m in zip(frames, maps, strict=True)
        ]
    )
    return torch.from_numpy(sampled.astype(np.float32)).permute(0, 3, 1, 2).div(np.iinfo(frames.dtype).max)


def one_depth(compose: Callable) -> Callable:
    """``compose`` whose detail transfer sees each frame's median depth everywhere."""

    def flat(*, depth: torch.Tensor, **kwargs):
        median = depth.flatten(1).median(1).values.view(-1, 1, 1, 1)
        return compose(depth=median.expand_as(depth).contiguous(), **kwargs)

    return flat


def blurred_depth(compose: Callable, sigma: float) -> Callable:
    """``compose`` whose detail transfer sees the rendered inverse depth blurred by a Gaussian of
    ``sigma`` working-size pixels: the depth's large-scale shape stays, its pixel-scale noise goes."""

    def smooth(*, depth: torch.Tensor, **kwargs):
        size = 2 * round(3 * sigma) + 1
        inverse = gaussian_blur(1 / depth.clamp(min=1e-6), [size, size], [sigma, sigma])
        return compose(depth=1 / inverse, **kwargs)

    return smooth


def low_band(mean: Callable, sigma: float) -> Callable:
    """``agreeing_mean`` that averages only the band below a Gaussian of ``sigma`` output pixels
    and keeps the source's detail above it."""

    def fused(own: torch.Tensor, others: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        size = 2 * round(3 * sigma) + 1

        def blur(x: torch.Tensor) -> torch.Tensor:
            return gaussian_blur(x, [size, size], [sigma, sigma])

        return own - blur(own) + mean(blur(own), [(blur(sampled), inside) for sampled, inside in others])

    return fused


def exposure_flicker(frames: np.ndarray) -> float:
    """Mean absolute change of the mean gray level (0-255) between consecutive frames."""
    means = np.array([to_gray(f).mean() for f in frames], np.float64)
    return float(np.abs(np.diff(means)).mean())


def variants(config: StabilizeConfig) -> dict[str, tuple[StabilizeConfig, tuple | None]]:
    """Name -> (config, patch) of every variant, the default first."""
    no_fill = replace(config, render=replace(config.render, canvas_offsets=(), fusion_offsets=()))
    fused = replace(config, render=replace(config.render, detail_offsets=(1,)))
    wider = replace(config, render=replace(config.render, detail_offsets=(1, 2)))
    low = low_band(infer.compose.agreeing_mean, 1.0)
    return {
        "default": (config, None),
        "detail of +-1": (fused, None),
        "detail of +-1 and 2": (wider, None),
        **{f"agreement {n} levels": (fused, (infer.compose, "AGREEMENT", n / 255)) for n in (3, 5)},
        "neighbours' low band only": (fused, (infer.compose, "agreeing_mean", low)),
        "no neighbour fill": (no_fill, None),
        "source wherever seen": (config, (infer.compose, "SOURCE_RAMP", (0.0, 1e-6))),
        "one depth a frame": (config, (infer.rerender, "compose", one_depth(infer.compose.compose))),
        "depth blurred 2 px": (config, (infer.rerender, "compose", blurred_depth(infer.compose.compose, 2))),
        "depth blurred 6 px": (config, (infer.rerender, "compose", blurred_depth(infer.compose.compose, 6))),
        "bilinear sampling": (config, (infer.compose, "resample", bilinear)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("clip", type=Path)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="gavs-stabilize config overrides")
    parser.add_argument("--max-frames", type=int, default=60, help="only the first N frames")
    parser.add_argument("--only", nargs="*", metavar="VARIANT", help="these variants (and the default) only")
    parser.add_argument(
        "--work", type=Path, default=Path("flicker-causes"), help="outputs and the shared cache"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "flicker-causes.json")
    args = parser.parse_args()
    config = configured(StabilizeConfig, "default", None, [*args.overrides, f"max_frames={args.max_frames}"])
    args.work.mkdir(parents=True, exist_ok=True)
    clip = read_video(args.clip, args.max_frames)
    source = clip.frames
    rows = [{"variant": "input", "flicker": None, "exposure_flicker": exposure_flicker(source)}]
    for name, (variant, patch) in variants(config).items():
        if args.only and name not in {"default", *args.only}:
            continue
        output = args.work / f"{args.clip.stem}.{name.replace(' ', '-')}.mp4"
        with patched(patch):
            stabilize(
                args.clip,
                output,
                variant,
                work_dir=args.work / "cache",
                evaluate_output=False,
                progress=False,
            )
        frames = read_video(output).frames
        scores = evaluate(source, frames, clip.fps, progress=False)
        rows[0]["flicker"] = scores["input"]["flicker"]
        rows.append({"variant": name, **scores["output"], "exposure_flicker": exposure_flicker(frames)})
        print(f"{name}: flicker {scores['output']['flicker']:.3f}", flush=True)
    table = [
        "| variant | flicker | ratio to default | exposure flicker | sharpness | jitter px |",
        "|---|---|---|---|---|---|",
    ]
    default = rows[1]["flicker"]
    for row in rows:
        cells = [f"{row.get(k):.3f}" if row.get(k) is not None else "-" for k in ("sharpness", "jitter_px")]
        table.append(
            f"| {row['variant']} | {row['flicker']:.3f} | {row['flicker'] / default:.3f} "
            f"| {row['exposure_flicker']:.3f} | {cells[0]} | {cells[1]} |"
        )
    print("\n".join(table))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(
        args.out, json.dumps({"clip": args.clip.name, "frames": len(source), "rows": rows}, indent=2)
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
