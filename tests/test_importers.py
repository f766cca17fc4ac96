"""Importers on small fixtures written from a synthetic clip with known poses."""

import json

import cv2
import numpy as np
import pytest
import torch

from data_prep.cli import main as prep_main
from data_prep.poses import estimate_poses
from data_prep.schema import iterate_clips
from data_prep.synthetic import SyntheticConfig, generate
from model.cameras import opencv_to_opengl

SMALL = ["max_side=96", "clip_length=12", "clip_stride=12"]


@pytest.fixture(scope="module")
def clip():
    return generate(SyntheticConfig(width=192, height=108, num_frames=12, seed=4), progress=False)


def write_frames(clip, folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for frame, name in zip(clip.frames, names, strict=True):
        cv2.imwrite(str(folder / name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))


def imported(out):
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest, list(iterate_clips([str(out / s["name"]) for s in manifest["shards"]]))


def test_re10k(clip, tmp_path):
    stamps = [1_000_000 + 33_333 * i for i in range(12)]
    write_frames(clip, tmp_path / "frames" / "seq01", [f"{t}.png" for t in stamps])
    w2c = np.linalg.inv(clip.c2w)
    K = clip.K
    lines = ["https://www.youtube.com/watch?v=example"]
    for t, pose in zip(stamps, w2c, strict=True):
        intr = [K[0, 0] / 192, K[1, 1] / 108, K[0, 2] / 192, K[1, 2] / 108, 0, 0]
        lines.append(" ".join(repr(float(v)) for v in [t, *intr, *pose[:3].reshape(-1)]))
    (tmp_path / "cams").mkdir()
    (tmp_path / "cams" / "seq01.txt").write_text("\n".join(lines))
    out = tmp_path / "out"
    args = ["import", "re10k", "--cameras", str(tmp_path / "cams"), "--frames", str(tmp_path / "frames")]
    assert prep_main([*args, "--out", str(out), *SMALL]) == 0
    manifest, clips = imported(out)
    assert manifest["pose_methods"] == {"re10k": 1} and len(clips) == 1
    sample = clips[0]
    assert np.allclose(sample.poses.c2w, clip.c2w, atol=1e-9)
    assert sample.frames.shape == (12, 54, 96, 3)
    assert np.allclose(sample.poses.per_frame_K()[0], K * np.array([[0.5], [0.5], [1.0]]))  # resized by half
    assert sample.fps == pytest.approx(30.0, rel=1e-3)


def test_transforms_json_converts_opengl_axes(clip, tmp_path):
    write_frames(clip, tmp_path / "images", [f"{i:04d}.png" for i in range(12)])
    gl = opencv_to_opengl(torch.from_numpy(clip.c2w)).numpy()
    frames = [{"file_path": f"images/{i:04d}", "transform_matrix": gl[i].tolist()} for i in range(12)]
    K = clip.K
    data = {
        "fl_x": K[0, 0],
        "fl_y": K[1, 1],
        "cx": K[0, 2],
        "cy": K[1, 2],
        "w": 192,
        "h": 108,
        "frames": frames,
    }
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    out = tmp_path / "out"
    assert import_transforms(tmp_path / "transforms.json", out, *SMALL, "priors.flow=false") == 0
    _, clips = imported(out)
    assert np.allclose(clips[0].poses.c2w, clip.c2w, atol=1e-12)
    assert clips[0].flow is None


def import_transforms(json_path, out, *overrides) -> int:
    return prep_main(["import", "transforms", "--json", str(json_path), "--out", str(out), *overrides])


def test_colmap_model(clip, tmp_path):
    work = tmp_path / "sfm"
    work.mkdir()
    poses = estimate_poses(clip.frames, workdir=work)
    assert poses.pose_method == "global"
    out = tmp_path / "out"
    model = next((work / "global").iterdir())
    assert (
        prep_main(
            [
                "import",
                "colmap",
                "--model",
                str(model),
                "--images",
                str(work / "images"),
                "--out",
                str(out),
                *SMALL,
                "priors.flow=false",
            ]
        )
        == 0
    )
    _, clips = imported(out)
    sample = clips[0]
    # the same model, the same normalisation: the poses the pose stage itself returned
    assert np.allclose(sample.poses.c2w, poses.c2w, atol=1e-6)
    assert sample.poses.scale == pytest.approx(poses.scale)
    assert len(sample.poses.observations) == len(poses.observations)
    # observations were rescaled with the frames (192 -> 96 px wide)
    assert np.allclose(sample.poses.observations[:, 1:3], poses.observations[:, 1:3] * 0.5, atol=1e-3)


def test_bad_import_input_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "transforms.json").write_text("{}")
    assert import_transforms(tmp_path / "transforms.json", tmp_path / "o") == 2
    assert "not a transforms.json with 'frames'" in capsys.readouterr().err
    assert (
        prep_main(
            [
                "import",
                "colmap",
                "--model",
                str(tmp_path),
                "--images",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "not a COLMAP model" in capsys.readouterr().err
    assert not list((tmp_path / "o").glob("*.tar"))
