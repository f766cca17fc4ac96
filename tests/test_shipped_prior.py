"""The pretrained prior that ships inside the package: it is found by name, loads as the
stabilizer's own network, its sums hold, and a damaged copy is refused."""

import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from infer.stabilize import StabilizeConfig, initial_network
from model.release import CONFIG, SUMS, WEIGHTS, ReleaseError, architecture, load_predictor, sha256, shipped

MAX_BYTES = 25 * 1000**2  # the budget for a committed release


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.fixture(scope="module")
def folder():
    assert "prior-cpu" in shipped(), "model/releases/prior-cpu is not in the package"
    return shipped()["prior-cpu"]


def test_the_shipped_prior_is_small_fp16_and_summed(folder):
    files = sorted(p.name for p in folder.iterdir())
    assert {WEIGHTS, CONFIG, SUMS, "README.md"} <= set(files)
    assert sum(p.stat().st_size for p in folder.iterdir()) <= MAX_BYTES
    weights = load_file(folder / WEIGHTS).values()
    assert all(v.dtype == torch.float16 for v in weights if v.is_floating_point())
    assert yaml.safe_load((folder / CONFIG).read_text())["dtype"] == "float16"
    listed = dict(reversed(line.split()) for line in (folder / SUMS).read_text().splitlines())
    assert sorted(listed) == [name for name in files if name != SUMS]  # every file is summed
    assert all(sha256(folder / name) == digest for name, digest in listed.items())


def test_it_loads_by_name_as_the_stabilizers_network(folder):
    net = load_predictor("prior-cpu", expected=StabilizeConfig().network)
    assert architecture(net.config) == architecture(StabilizeConfig().network)
    started, provenance = initial_network(StabilizeConfig(checkpoint="prior-cpu"))
    assert provenance["weights_sha256"] == sha256(folder / WEIGHTS)
    assert same_weights(net, started)
    with torch.no_grad():
        output = started(torch.rand(1, 3, 64, 96), torch.tensor([[[80.0, 0, 48], [0, 80, 32], [0, 0, 1]]]))
    assert output.depth.shape[-2:] == (64, 96) and (output.depth > 0).all()
    assert all(torch.isfinite(t).all() for t in (output.depth, output.opacity, output.scale, output.offset))


def test_a_damaged_copy_is_refused(folder, tmp_path):
    copy = tmp_path / "prior"
    shutil.copytree(folder, copy)
    weights = bytearray((copy / WEIGHTS).read_bytes())
    weights[-100] ^= 0xFF  # one byte of the last tensor's data
    (copy / WEIGHTS).write_bytes(bytes(weights))
    with pytest.raises(ReleaseError, match="corrupt"):
        load_predictor(copy)


def test_none_means_a_fresh_network():
    assert StabilizeConfig(checkpoint="none").checkpoint is None
    fresh, provenance = initial_network(StabilizeConfig(checkpoint=None, seed=3))
    again, _ = initial_network(StabilizeConfig(seed=3))
    assert provenance["init"].startswith("fresh")
    assert same_weights(fresh, again)
