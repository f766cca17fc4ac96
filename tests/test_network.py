"""The reconstruction network: structure of its output, step-0 rendering, backbones, weights."""

import pytest
import timm
import torch

from data_prep.synthetic import SyntheticConfig, generate
from model.network import GaussianPredictor, NetworkConfig
from model.render import render


@pytest.fixture(scope="module")
def frame():
    clip = generate(SyntheticConfig(width=96, height=64, num_frames=1), progress=False)
    image = torch.from_numpy(clip.frames[:1]).permute(0, 3, 1, 2).float() / 255
    return image, torch.from_numpy(clip.K).float()[None]


def test_fresh_network_output_structure(frame):
    image, K = frame
    out = GaussianPredictor(NetworkConfig(layers=3))(image, K)
    g = out.gaussians
    assert g.count == 3 * 64 * 96 and g.features is None  # nothing renders a per-Gaussian extra
    assert torch.all(out.depth[:, 1:] > out.depth[:, :-1])  # every deeper layer lies behind
    assert torch.allclose(out.depth[:, 0], torch.ones_like(out.depth[:, 0]), atol=1e-4)
    assert torch.allclose(g.quats[..., 0], torch.ones_like(g.quats[..., 0]))
    assert (g.scales > 0).all() and (out.offset.abs() <= 0.2 * out.depth[:, :, None] + 1e-6).all()
    assert torch.allclose(
        g.colors.reshape(1, 3, 64 * 96, 3)[:, 0], image.flatten(2).transpose(1, 2), atol=2e-3
    )


def test_first_layer_depth_is_the_forward_pass_first_layer_depth(frame):
    image, K = frame
    torch.manual_seed(0)
    net = GaussianPredictor(NetworkConfig(layers=2)).eval()
    torch.nn.init.normal_(net.head.weight, std=0.1)  # depths that vary over the frame
    valid = (torch.rand_like(image[:, :1]) > 0.3).float()
    with torch.no_grad():
        for mask in (None, valid):
            expected = net(image, K, mask).depth[:, 0]
            assert expected.std() > 1e-3
            # the same convolutions on the same inputs: equal, not merely close
            assert torch.equal(net.first_layer_depth(image, mask), expected)


def test_under_autocast_the_trunk_runs_in_bf16_and_the_head_in_float32(frame):
    image, K = frame
    net = GaussianPredictor(NetworkConfig(layers=2))
    dtypes = {}
    for name, module in (("encoder", net.encoder.conv1), ("head_in", net.head_in[0]), ("head", net.head)):
        module.register_forward_hook(lambda _, __, out, name=name: dtypes.__setitem__(name, out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for run in (lambda: net(image, K).depth, lambda: net.first_layer_depth(image)):
            dtypes.clear()
            assert run().dtype == torch.float32
            assert dtypes == {"encoder": torch.bfloat16, "head_in": torch.float32, "head": torch.float32}


def test_rotations_are_the_raw_quaternions_normalised(frame):
    image, K = frame
    net = GaussianPredictor(NetworkConfig(layers=2))
    torch.nn.init.normal_(net.head.weight, std=0.1)  # rotations other than the identity
    raw = {}
    net.head.register_forward_hook(lambda _, __, out: raw.setdefault("head", out))
    quats = net(image, K).gaussians.quats
    expected = torch.nn.functional.normalize(raw["head"].view(1, 2, -1, 64, 96)[:, :, 8:12], dim=2)
    # the written-out normalisation agrees with torch's to float32 rounding (1.2e-7 measured)
    assert torch.allclose(quats, expected.flatten(3).transpose(2, 3).reshape(1, -1, 4), atol=1e-6)
    assert (quats.norm(dim=-1) - 1).abs().max() < 1e-6 and quats[..., 1:].abs().max() > 0.1


def test_fresh_network_renders_its_input_back(frame):
    image, K = frame
    net = GaussianPredictor(NetworkConfig())
    out = net(image, K)
    rendered = render(out.gaussians, torch.eye(4)[None, None], K[:, None], 96, 64, backend="torch")
    psnr = 10 * torch.log10(1 / ((rendered.color[:, 0] - image) ** 2).mean())
    assert psnr > 24 and rendered.alpha.min() > 0.95, psnr  # measured: about 27 dB
    # the heads start at zero weight, so the first step moves only them; timm's ResNet blocks
    # also zero their last BatchNorm, which opens the residual branches a step later. From the
    # third step on, every parameter learns.
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        out = net(image, K)
        loss = render(
            out.gaussians, torch.eye(4)[None, None], K[:, None], 96, 64, backend="torch"
        ).color.std()
        loss.backward()
        optimizer.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenetv3_small_050"])
def test_backbones_by_name(frame, backbone):
    image, K = frame
    net = GaussianPredictor(NetworkConfig(backbone=backbone, layers=1))
    out = net(image, K)
    assert out.depth.shape == (1, 1, 64, 96) and out.gaussians.features is None


def test_encoder_weights_load_from_a_local_file_only(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    net = GaussianPredictor(NetworkConfig(backbone="resnet18", pretrained_path=str(path)))
    assert torch.equal(net.encoder.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    # the first conv takes 4 channels (RGB + validity); timm adapts the 3-channel weights
    assert net.encoder.conv1.weight.shape[1] == 4
    fresh = GaussianPredictor(NetworkConfig(backbone="resnet18"))
    assert not torch.equal(fresh.encoder.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
