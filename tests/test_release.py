"""gavs-release and the loader: round trips, fp16, hub ids, and every refusal."""

import shutil

import huggingface_hub.constants
import pytest
import torch
import yaml

from model.network import NetworkConfig
from model.release import CONFIG, SUMS, WEIGHTS, ReleaseError, load_predictor
from train.release import main as release_main


def outputs(net, seed=0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, 32, 56, generator=generator)
    K = torch.tensor([[[50.0, 0, 28], [0, 50, 16], [0, 0, 1]]])
    with torch.no_grad():
        out = net(image, K)
    return torch.cat([out.gaussians.means, out.gaussians.colors, out.gaussians.scales], -1)


@pytest.fixture(scope="module")
def released(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("rel") / "gavs-tiny"
    assert release_main([str(trained), str(out)]) == 0
    return out


def test_release_round_trip_gives_identical_outputs(trained, released):
    ema = load_predictor(trained / "checkpoints" / "step_00000040" / "ema")
    assert torch.equal(outputs(load_predictor(released)), outputs(ema))
    names = {p.name for p in released.iterdir()}
    assert names == {WEIGHTS, CONFIG, SUMS, "README.md", "training_config.yaml"}
    sums = (released / SUMS).read_text()
    assert all(name in sums for name in names - {SUMS})
    card = (released / "README.md").read_text()
    config = yaml.safe_load((released / CONFIG).read_text())
    assert config["step"] == 40 and config["data"]["totals"]["clips"] == 4
    assert f"{config['validation']['psnr_target']:.4f}" in card and "4 clips, 64 frames" in card


def test_fp16_release_is_half_the_size_and_close(trained, released, tmp_path):
    half = tmp_path / "half"
    assert release_main([str(trained), str(half), "--fp16"]) == 0
    assert (half / WEIGHTS).stat().st_size < 0.55 * (released / WEIGHTS).stat().st_size
    full, rounded = outputs(load_predictor(released)), outputs(load_predictor(half))
    assert not torch.equal(full, rounded)
    # float16 keeps 11 bits (relative rounding 5e-4); measured output error: 4e-4 absolute,
    # 6e-4 relative at most
    assert torch.allclose(full, rounded, rtol=2e-3, atol=2e-3)


def test_hub_id_loads_from_the_local_hub_cache(released, tmp_path, monkeypatch):
    snapshot = tmp_path / "models--gavs--tiny" / "snapshots" / ("0" * 40)
    shutil.copytree(released, snapshot)
    (tmp_path / "models--gavs--tiny" / "refs").mkdir()
    (tmp_path / "models--gavs--tiny" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert torch.equal(outputs(load_predictor("gavs/tiny")), outputs(load_predictor(released)))


def test_loader_refusals(released, tmp_path):
    with pytest.raises(
        ReleaseError, match=r"different network .*backbone=resnet18.*expects backbone=resnet34"
    ):
        load_predictor(
            released, expected=NetworkConfig(backbone="resnet34", decoder_channels=(8, 16, 32, 64, 128))
        )
    corrupt = tmp_path / "corrupt"
    shutil.copytree(released, corrupt)
    data = bytearray((corrupt / WEIGHTS).read_bytes())
    data[-1] ^= 0xFF
    (corrupt / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(ReleaseError, match="corrupt"):
        load_predictor(corrupt)
    mismatched = tmp_path / "mismatched"
    shutil.copytree(released, mismatched)
    config = yaml.safe_load((mismatched / CONFIG).read_text())
    config["network"]["layers"] = 3
    (mismatched / CONFIG).write_text(yaml.safe_dump(config))
    (mismatched / SUMS).unlink()
    with pytest.raises(ReleaseError, match="weights do not fit its config"):
        load_predictor(mismatched)
    with pytest.raises(ReleaseError, match="not a release folder"):
        load_predictor(tmp_path)
    with pytest.raises(ReleaseError, match=r"no such folder, no shipped release of that name \(prior-cpu\)"):
        load_predictor(tmp_path / "missing" / "deeper")


def test_releases_written_with_a_depth_prior_field_still_load_unless_they_used_it(released, tmp_path):
    older = tmp_path / "older"
    shutil.copytree(released, older)
    (older / SUMS).unlink()
    config = yaml.safe_load((older / CONFIG).read_text())
    config["network"]["depth_prior"] = False  # what every release before the field went wrote
    (older / CONFIG).write_text(yaml.safe_dump(config))
    assert torch.equal(outputs(load_predictor(older)), outputs(load_predictor(released)))
    config["network"]["depth_prior"] = True
    (older / CONFIG).write_text(yaml.safe_dump(config))
    with pytest.raises(ReleaseError, match="built with a depth-prior input channel"):
        load_predictor(older)


def test_release_cli_errors(trained, released, tmp_path, capsys):
    assert release_main([str(tmp_path), str(tmp_path / "out")]) == 2
    assert "no checkpoints" in capsys.readouterr().err
    assert release_main([str(trained), str(released)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert release_main([str(trained), str(released), "--force"]) == 0
