"""Shared test setup: GPU tests skip cleanly without CUDA."""

import pytest
import torch


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
    from data_prep.build import PrepConfig, build
    from data_prep.config import load_config
    from data_prep.synthetic import SyntheticConfig, generate
    from data_prep.video import write_video

    root = tmp_path_factory.mktemp("pretrain")
    videos = root / "videos"
    videos.mkdir()
    for seed in range(4):
        clip = generate(SyntheticConfig(width=128, height=72, num_frames=16, seed=seed), progress=False)
        write_video(videos / f"s{seed}.mp4", clip.frames, fps=30)
    config = load_config(PrepConfig, None, ["max_side=128", "clip_length=16", "clip_stride=16",
                                            "shard_max_clips=1", "workers=2"])  # fmt: skip
    build(str(videos), root / "shards", config, progress=False)
    return root / "shards"
