"""The padded canvas keeps every pixel's ray and marks the padding invalid."""

import pytest
import torch

from common.config import ConfigError
from infer.canvas import CanvasConfig, pad_canvas
from model.cameras import make_intrinsics, project, unproject


def test_padding_keeps_rays_and_marks_the_border():
    images = torch.rand(2, 3, 40, 60)
    K = make_intrinsics(50.0, 50.0, 30.0, 20.0, dtype=torch.float32).expand(2, 3, 3)
    padded, valid, K_padded = pad_canvas(images, K, 0.125)
    assert padded.shape == (2, 3, 50, 76) and valid.shape == (2, 1, 50, 76)
    assert torch.equal(padded[:, :, 5:45, 8:68], images)
    assert torch.equal(padded[:, :, :5, 8:68], images[:, :, :1].expand(2, 3, 5, 60))  # edges repeat
    assert torch.equal(padded[:, :, 5:45, :8], images[:, :, :, :1].expand(2, 3, 40, 8))
    assert valid.sum() == 2 * 40 * 60 and valid[:, :, 5:45, 8:68].min() == 1
    # a point seen at pixel (u, v) of the frame is seen at (u + 8, v + 5) of the canvas
    point = unproject(torch.tensor([[12.5, 30.5]]), torch.tensor([2.0]), K[0])
    uv_padded, _ = project(point, K_padded[0])
    assert torch.allclose(uv_padded, torch.tensor([[20.5, 35.5]]), atol=1e-5)


def test_a_canvas_whose_least_pad_exceeds_its_most_is_refused():
    with pytest.raises(ConfigError, match="pad <= max_pad"):
        CanvasConfig(pad=0.4)
    assert CanvasConfig().fixed(0.2) == CanvasConfig(pad=0.2, max_pad=0.2)
