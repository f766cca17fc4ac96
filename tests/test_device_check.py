"""bench/device_check.py's CPU parts, so the one-call GPU check cannot rot between GPU runs."""

import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from device_check import main


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU runs the full check")
def test_the_quick_device_check_runs_every_step_it_can_and_says_why_not_the_others(tmp_path: Path):
    assert main(["--out", str(tmp_path), "--quick"]) == 0
    report = json.loads((tmp_path / "device-check.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["build", "gpu-tests", "render", "training", "stabilize"]
    for name in ("build", "gpu-tests"):
        assert steps[name]["status"] == "skipped" and steps[name]["note"] == "no CUDA device here"
    assert all(steps[name]["status"] == "ok" for name in ("render", "training", "stabilize"))
    [cell] = steps["render"]["results"]["results"]
    assert cell["backend"] == "cpu" and cell["forward_backward_images_per_s"] > 0
    assert steps["training"]["results"]["samples_per_s_median"] > 0
    stabilized = steps["stabilize"]["results"]
    assert stabilized["frames"] == 24 and {"poses", "finetune", "render"} <= set(stabilized["timings_s"])
    table = (tmp_path / "device-check.md").read_text()
    assert table.count("\n| ") == 6  # the header and a row per step
