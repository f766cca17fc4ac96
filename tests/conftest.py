"""Shared test setup: GPU tests skip cleanly without CUDA; session fixtures."""

import pytest
import torch
from helpers import FAST, TINY, shards_arg


def pytest_sessionstart(session):
    """Build the fast CPU renderer's C++ before any test (about a minute on a fresh machine),
    so the commands the tests run load it at once and print nothing about it."""
    from model.rasterize_cpu import cpu_kernels_available

    cpu_kernels_available()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def pretrain_shards(tmp_path_factory):
    """Four posed synthetic clips, one per shard, built by gavs-prep's real pipeline (~10 s)."""
    from common.config import load_config
    from data_prep.build import PrepConfig, build
    from data_prep.synthetic import SyntheticConfig, generate
    from data_prep.video import write_video

    root = tmp_path_factory.mktemp("pretrain")
    videos = root / "videos"
    videos.mkdir()
    for seed in range(4):
        clip = generate(SyntheticConfig(width=128, height=72, num_frames=16, seed=seed), progress=False)
        write_video(videos / f"s{seed}.mp4", clip.frames, fps=30)
    config = load_config(
        PrepConfig,
        None,
        ["max_side=128", "clip_length=16", "clip_stride=16", "shard_max_clips=1", "workers=2"],
    )
    build(str(videos), root / "shards", config, progress=False)
    return root / "shards"


@pytest.fixture(scope="session")
def trained(pretrain_shards, tmp_path_factory):
    """40 steps of the tiny config with wandb (offline: no key, no netrc), validated at 0, 20, 40
    on fixed batches of the training clips (so ``val/loss`` is the training loss, without noise)."""
    from train.cli import main as train_main

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    shards = shards_arg(pretrain_shards)
    with pytest.MonkeyPatch.context() as env:
        for name in ("WANDB_MODE", "WANDB_API_KEY"):
            env.delenv(name, raising=False)
        env.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        code = train_main(
            [
                "--config",
                str(TINY),
                f"run_dir={run_dir}",
                shards,
                *FAST,
                "optim.lr=5e-3",
                "max_steps=40",
                "checkpoint_every=20",
                "logging.tracker=wandb",
                f"validation.shards={shards.split('=', 1)[1]}",
                "validation.every=20",
                "validation.batches=4",
            ]
        )
    assert code == 0
    return run_dir
