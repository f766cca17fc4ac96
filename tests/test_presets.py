"""Presets chosen by device, layered under --config and overrides, and the estimate said first."""

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from helpers import QUICK_STABILIZE

from data_prep.synthetic import SyntheticConfig, generate
from data_prep.video import probe, write_video
from infer.presets import announcement, estimate_seconds, preset_for
from infer.render_cli import main as render_main
from infer.stabilize import StabilizeConfig
from infer.stabilize_cli import main as stabilize_main

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def printed(capsys, *args: str) -> dict:
    assert stabilize_main(["in.mp4", "--print-config", *args]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_the_device_picks_the_preset_and_explicit_settings_win(capsys):
    assert preset_for("default", CUDA) == ("default", None)  # the config's own: GaVS's finetuning
    assert preset_for("default", CPU)[0] == "cpu" and preset_for("gavs", CUDA)[0] == "gavs"
    assert StabilizeConfig().finetune.steps_per_frame == 3.0 and StabilizeConfig().finetune.batch == 5

    cpu = printed(capsys, "--device", "cpu")
    shipped = yaml.safe_load(Path(preset_for("default", CPU)[1]).read_text())
    assert cpu["preset"] == "cpu" and cpu["resolution"] == shipped["resolution"]
    assert cpu["finetune"]["steps_per_frame"] == shipped["finetune"]["steps_per_frame"] < 3.0
    # the CPU preset starts from the shipped prior; CUDA's default from a fresh network
    assert cpu["checkpoint"] == shipped["checkpoint"] == "prior-cpu" and StabilizeConfig().checkpoint is None
    assert printed(capsys, "--device", "cpu", "--checkpoint", "none")["checkpoint"] is None
    gavs = printed(capsys, "--device", "cpu", "--preset", "gavs")
    assert (
        gavs["preset"] == "gavs"
        and gavs["smoothing"] == "gaussian"
        and gavs["finetune"]["steps_per_frame"] == 3.0
    )
    fast = printed(capsys, "--preset", "fast", "--device", "cpu")

    # a preview does less finetuning work than the cpu preset: steps times working pixels
    def work(preset: dict) -> tuple[float, float]:
        area, tuning = preset["resolution"] ** 2, preset["finetune"]
        return area * tuning["steps_per_frame"], area * tuning["min_steps"]

    assert all(f < c for f, c in zip(work(fast), work(cpu), strict=True))
    # --config over the preset, key=value over both
    layered = printed(capsys, "--device", "cpu", "--config", "cpu-demo", "finetune.batch=4")
    assert layered["resolution"] == 192 and layered["finetune"]["batch"] == 4 and layered["preset"] == "cpu"


def test_gavs_render_resolves_the_settings_gavs_stabilize_does(capsys):
    """So that a readout with --work-dir finds the stabilize run's poses and networks."""
    for args in (["--device", "cpu"], ["--device", "cpu", "--preset", "fast", "finetune.batch=2"]):
        stabilized = printed(capsys, *args)
        assert render_main(["in.mp4", "--path", "push-in", "--print-config", *args]) == 0
        rendered = yaml.safe_load(capsys.readouterr().out)
        assert {k: rendered[k] for k in stabilized} == stabilized


def test_the_estimate_grows_with_the_work_and_needs_measured_costs(tmp_path):
    clip = generate(SyntheticConfig(width=64, height=36, num_frames=4), progress=False)
    write_video(tmp_path / "a.mp4", clip.frames, fps=30)
    info = probe(tmp_path / "a.mp4")
    config = StabilizeConfig(resolution=64)
    base = estimate_seconds(config, info, CPU, evaluate=False)
    assert set(base) == {"poses", "finetune", "render"} and all(v > 0 for v in base.values())
    longer = estimate_seconds(config, dataclasses.replace(info, promised_frames=400), CPU, evaluate=True)
    assert longer["poses"] == pytest.approx(100 * base["poses"]) and longer["evaluate"] > 0
    assert longer["finetune"] > base["finetune"]  # past min_steps, steps follow the frames
    doubled = dataclasses.replace(config.finetune, batch=2 * config.finetune.batch)
    wider = estimate_seconds(dataclasses.replace(config, finetune=doubled), info, CPU, evaluate=False)
    # twice the renders a step; the step's own passes and update do not double
    assert base["finetune"] < wider["finetune"] < 2 * base["finetune"]
    bigger = estimate_seconds(dataclasses.replace(config, resolution=32), info, CPU, evaluate=False)
    assert bigger["poses"] == pytest.approx(base["poses"] / 4)  # a quarter of the working pixels
    assert estimate_seconds(config, info, torch.device("meta"), evaluate=False) is None
    assert "no measured costs for meta yet" in announcement("default", torch.device("meta"), 4, None)
    assert announcement("cpu", CPU, 4, {"poses": 30.0, "finetune": 150.0}) == (
        "preset cpu on cpu: 4 frames, about 3 min (poses 30 s, finetune 2 min)"
    )


def test_a_run_says_its_preset_and_estimate_before_it_starts(tmp_path, capsys):
    clip = generate(SyntheticConfig(width=96, height=64, num_frames=12, seed=2), progress=False)
    write_video(tmp_path / "clip.mp4", clip.frames, fps=30)
    out = tmp_path / "out.mp4"
    assert stabilize_main([str(tmp_path / "clip.mp4"), "-o", str(out), "--no-eval", *QUICK_STABILIZE]) == 0
    err = capsys.readouterr().err
    assert err.startswith("gavs-stabilize: preset cpu on cpu: 12 frames, about "), err
    report = yaml.safe_load(out.with_suffix(".report.json").read_text())
    assert set(report["estimated_s"]) == {"poses", "finetune", "render"}
    assert report["config"]["preset"] == "cpu"
