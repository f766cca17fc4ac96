"""``gavs-prep``: build pose-annotated WebDataset clip shards, and verify them."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from common import interrupt
from common.atomic import write_atomic
from common.config import ConfigError, config_yaml, load_config, resolve_preset
from common.interrupt import Interrupted, interrupted_line
from data_prep.build import BuildError, PrepConfig, build
from data_prep.importers import ImportFormatError, import_sequences, read_colmap, read_re10k, read_transforms
from data_prep.locations import LocationError
from data_prep.merge import merge
from data_prep.schema import SchemaError
from data_prep.verify import verify
from data_prep.video import VideoError

DEFAULT_PRESET = "default"  # configs/prep/default.yaml, shipped with the package
STAGES = {"build": "building clips", "import": "importing", "merge": "merging", "verify": "verifying"}


def parse_slice(text: str) -> tuple[int, int]:
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--slice must be K/N, got {text!r}") from None
    if not 0 <= k < n:
        raise ConfigError(f"--slice {text}: need 0 <= K < N")
    return k, n


def _finish(out: Path, config: PrepConfig, manifest: dict) -> None:
    """Write the resolved config beside the shards and print a one-line summary."""
    write_atomic(out / "config.yaml", config_yaml(config))
    totals = manifest["totals"]
    print(
        f"{totals['clips']} clips ({totals['frames']} frames) in {len(manifest['shards'])} shards, "
        f"{totals['rejected']} rejected; manifest: {out / 'manifest.json'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gavs-prep", description="Turn videos into pose-annotated clip shards."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    b = commands.add_parser(
        "build",
        help="videos -> shots -> clips -> poses -> priors -> shards",
        description="Build WebDataset shards of posed clips; reruns skip finished clips.",
    )
    b.add_argument("--input", required=True, help="a folder, a glob pattern, or a .txt list of videos")
    b.add_argument("--out", required=True, type=Path, help="output folder for shards and manifest.json")
    b.add_argument("--config", help=f"a preset name or a YAML file (default: {DEFAULT_PRESET})")
    b.add_argument("--workers", type=int, help="processes (default: the config's workers)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.add_argument("--slice", help="K/N: build only every N-th input video starting at the K-th (array jobs)")
    b.add_argument(
        "overrides", nargs="*", help="config overrides such as clip_length=32 poses.methods=[global]"
    )

    i = commands.add_parser(
        "import", help="shards from already-posed data (RealEstate10K, COLMAP, transforms.json)"
    )
    formats = i.add_subparsers(dest="format", required=True)
    re10k = formats.add_parser("re10k", help="RealEstate10K camera files with extracted frames")
    re10k.add_argument("--cameras", required=True, type=Path, help="a camera .txt file, or a folder of them")
    re10k.add_argument(
        "--frames", required=True, type=Path, help="folder with one subfolder of frames per file"
    )
    colmap = formats.add_parser("colmap", help="a COLMAP model folder (pinhole cameras)")
    colmap.add_argument("--model", required=True, type=Path, help="folder with cameras/images/points3D")
    colmap.add_argument("--images", required=True, type=Path, help="the model's image folder")
    transforms = formats.add_parser("transforms", help="a nerfstudio/Blender transforms.json")
    transforms.add_argument("--json", required=True, type=Path, help="the transforms.json")
    for sub in (re10k, colmap, transforms):
        sub.add_argument("--out", required=True, type=Path, help="output folder for shards and manifest.json")
        sub.add_argument("--config", help=f"a preset name or a YAML file (default: {DEFAULT_PRESET})")
        sub.add_argument("overrides", nargs="*", help="config overrides, e.g. clip_length=32 fps=30")

    m = commands.add_parser("merge", help="one manifest over the part folders of an array build")
    m.add_argument("out", type=Path, help="the merged dataset folder (usually the parts' parent)")
    m.add_argument("parts", nargs="+", type=Path, help="part folders written by gavs-prep build --slice")

    v = commands.add_parser("verify", help="re-read every shard, check schema and stats, draw contact sheets")
    v.add_argument(
        "dir",
        help="a folder written by gavs-prep build: a path, an http(s):// URL, or a pipe: command "
        "with {name} for the file, e.g. 'pipe:aws s3 cp s3://bucket/gavs/{name} -'",
    )
    v.add_argument("--every", type=int, default=8, help="one contact sheet per this many clips")
    v.add_argument(
        "--sheets", type=Path, help="folder for the contact sheets (default: DIR; ./contact-sheets if remote)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.command == "build" and not args.quiet else logging.WARNING,
        format="%(message)s",
    )
    try:
        with interrupt.stoppable(), interrupt.stage(STAGES[args.command]):
            _run(args)
    except (BuildError, ConfigError, ImportFormatError, LocationError, SchemaError, VideoError) as err:
        print(f"gavs-prep: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as err:
        print(interrupted_line("gavs-prep", err, resumable=args.command == "build"), file=sys.stderr)
        return err.exit_code
    return 0


def _run(args: argparse.Namespace) -> None:
    if args.command == "build":
        preset = resolve_preset("prep", args.config or DEFAULT_PRESET)
        overrides = list(args.overrides) + ([f"workers={args.workers}"] if args.workers else [])
        config = load_config(PrepConfig, preset, overrides)
        args.out.mkdir(parents=True, exist_ok=True)
        manifest = build(
            args.input,
            args.out,
            config,
            progress=False if args.quiet else None,
            part=parse_slice(args.slice) if args.slice else None,
        )
        _finish(args.out, config, manifest)
    elif args.command == "import":
        preset = resolve_preset("prep", args.config or DEFAULT_PRESET)
        config = load_config(PrepConfig, preset, list(args.overrides))
        fps = config.fps or 30.0
        if args.format == "re10k":
            files = sorted(args.cameras.glob("*.txt")) if args.cameras.is_dir() else [args.cameras]
            sequences = [read_re10k(f, args.frames) for f in files]
        elif args.format == "colmap":
            sequences = [read_colmap(args.model, args.images, fps)]
        else:
            sequences = [read_transforms(args.json, fps)]
        args.out.mkdir(parents=True, exist_ok=True)
        manifest = import_sequences(sequences, args.out, config)
        _finish(args.out, config, manifest)
    elif args.command == "merge":
        merged = merge(args.out, args.parts)
        totals = merged["totals"]
        shards, parts = len(merged["shards"]), len(merged["parts"])
        print(f"{totals['clips']} clips in {shards} shards from {parts} parts: {args.out / 'manifest.json'}")
    else:
        report = verify(args.dir, every=args.every, sheets=args.sheets)
        where = Path(report["contact_sheets"][0]).parent if report["contact_sheets"] else args.dir
        print(
            f"ok: {report['clips']} clips, {report['frames']} frames, "
            f"mean reprojection error {report['reprojection_error']:.3f} px; "
            f"{len(report['contact_sheets'])} contact sheets in {where}"
        )


if __name__ == "__main__":
    sys.exit(main())
