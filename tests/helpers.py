"""What several test modules share: small configs, paths and files the tests build."""

from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import torch

from data_prep.ingest import ingest
from data_prep.schema import ClipPoses
from infer.posing import PosedClip
from infer.stabilize import Finetuned, StabilizeConfig, finetuned_network, plan_path
from model.losses.perceptual import LAYERS

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "pretrain" / "tiny-cpu.yaml"
# small and quick: 32x56 crops, batch 2, every step logged
# gavs-stabilize quick on 2 cores: a 128-px working size and a handful of finetuning steps
QUICK_STABILIZE = [
    "--resolution",
    "128",
    "--quiet",
    "finetune.min_steps=6",
    "finetune.steps_per_frame=0",
    "finetune.batch=3",
    "finetune.neighbours=2",
]
FAST = ["data.size=[32,56]", "batch_size=2", "num_workers=1", "logging.every=1", "optim.warmup_steps=5"]


def shards_arg(shards: Path) -> str:
    return f"data.shards={shards}/train-{{000000..000003}}.tar"


def lpips_files(tmp_path, net="alex"):
    """A torchvision-format backbone (random init) and LPIPS-format positive linear weights."""
    import torchvision

    torch.manual_seed(0)
    backbone = (torchvision.models.alexnet if net == "alex" else torchvision.models.vgg16)(weights=None)
    torch.save(backbone.state_dict(), tmp_path / "backbone.pth")
    widths = LAYERS[net][1]
    torch.save(
        {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(widths)},
        tmp_path / "linear.pth",
    )
    return tmp_path / "backbone.pth", tmp_path / "linear.pth"


def stereo_tags(path: Path) -> tuple[str | None, list[int]]:
    """The container's comment and the stereo type of the frames' STEREO3D side data
    (FFmpeg's AVStereo3DType: 1 side by side, 2 top-bottom), as a player reads them."""
    with av.open(str(path)) as container:
        types = [
            int.from_bytes(bytes(data)[:4], "little")
            for frame in container.decode(video=0)
            for data in frame.side_data.values()
            if data.type.name == "STEREO3D"
        ]
        return container.metadata.get("comment"), types


def true_posed_clip(clip, video: Path, *, config, working: int) -> tuple[PosedClip, float]:
    """The synthetic ``clip`` (generated from ``config``, written to ``video``) at the
    ``working`` size with its true poses, scaled like SfM's to a median sparse depth of 1; the
    sparse cloud is 200 static pixels a frame at their true depth."""
    decoded = ingest(video, max_side=working)
    to_working = decoded.frames.shape[2] / config.width
    rng = np.random.default_rng(0)
    observations, points = [], []
    for t in range(config.num_frames):
        rows, cols = np.nonzero(~clip.dynamic_mask[t])
        pick = rng.choice(len(rows), 200, replace=False)
        u, v, z = cols[pick] + 0.5, rows[pick] + 0.5, clip.depth[t, rows[pick], cols[pick]]
        camera = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(clip.K).T * z[:, None]
        points.append(camera @ clip.c2w[t, :3, :3].T + clip.c2w[t, :3, 3])
        observations.append(np.stack([np.full_like(u, t), u * to_working, v * to_working, z], -1))
    observations, points = np.concatenate(observations), np.concatenate(points)
    scale = 1.0 / np.median(observations[:, 3])
    c2w = clip.c2w.copy()
    c2w[:, :3, 3] *= scale
    observations[:, 3] *= scale
    K = clip.K.copy()
    K[:2] *= to_working
    height, width = decoded.frames.shape[1:3]
    poses = ClipPoses(
        width,
        height,
        K,
        c2w,
        np.arange(config.num_frames),
        "truth",
        scale,
        points=points * scale,
        observations=observations,
        observation_points=np.arange(len(points)),
    )
    return PosedClip(decoded.frames, decoded.fps, decoded.source_size, poses), scale


def planned_and_tuned(
    posed: PosedClip, config: StabilizeConfig, work_dir: Path
) -> tuple[np.ndarray, dict, Finetuned]:
    """The smoothed path of a truth-posed clip, the path's summary, and the network finetuned
    on the clip at the path's adaptive canvas, as gavs-stabilize's 3D stages make them."""
    smoothed, summary = plan_path(posed, config)
    tuned = finetuned_network(
        posed,
        poses_key="truth",
        config=replace(config, canvas=config.canvas.fixed(summary["canvas_pad"])),
        work_dir=work_dir,
        device=torch.device("cpu"),
        progress=False,
    )
    return smoothed, summary, tuned
