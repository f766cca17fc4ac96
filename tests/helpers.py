"""What several test modules share: small configs, paths and files the tests build."""

from pathlib import Path

import av
import torch

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
            for data in frame.side_data
            if data.type.name == "STEREO3D"
        ]
        return container.metadata.get("comment"), types
