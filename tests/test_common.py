"""common/: atomic writes, the warmup-cosine schedule, config loading, presets and flags."""

import argparse
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from common.atomic import atomic_path, partial_path, write_atomic
from common.config import (
    ConfigError,
    add_flags,
    field_docs,
    flag_overrides,
    load_config,
    preset_names,
    resolve_preset,
)
from common.schedule import warmup_cosine


def test_atomic_file_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "report.json"
    write_atomic(target, "first")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    assert partial_path(target).name == ".report.partial.json"  # same suffix for format sniffers


def test_atomic_folder_replaces_the_old_one_whole(tmp_path):
    target = tmp_path / "release"
    with atomic_path(target, folder=True) as tmp:
        (tmp / "a").write_text("1")
    with atomic_path(target, folder=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]  # not merged into the old folder
    with pytest.raises(KeyboardInterrupt), atomic_path(target, folder=True) as tmp:
        (tmp / "c").write_text("3")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release"]
    assert sorted(p.name for p in target.iterdir()) == ["b"]


def test_warmup_cosine():
    lr = {"lr": 1.0, "min_lr": 0.1}
    assert [warmup_cosine(s, steps=10, warmup=4, **lr) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_cosine(4, steps=10, warmup=4, **lr) == 1.0  # the cosine starts at the top
    assert warmup_cosine(7, steps=10, warmup=4, **lr) == pytest.approx(
        0.1 + 0.45 * (1 + math.cos(math.pi / 2))
    )
    assert warmup_cosine(10, steps=10, warmup=4, **lr) == pytest.approx(0.1)
    assert warmup_cosine(50, steps=10, warmup=4, **lr) == pytest.approx(0.1)  # and stays there


@dataclass
class Inner:
    size: int = 3
    """How big."""


@dataclass
class Job:
    mode: Literal["fast", "slow"] = "fast"
    """fast: less work; slow: more."""
    count: int | None = None
    """How many, at most."""
    undocumented: float = 1.0
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.count is not None and self.count < 0:
            raise ConfigError(f"count must be 0 or more, got {self.count}")


def test_literal_choices_ranges_and_unknown_keys_are_config_errors():
    assert load_config(Job, None, ["mode=slow", "inner.size=5"]) == Job("slow", inner=Inner(5))
    with pytest.raises(ConfigError, match=r"config: mode: Invalid value 'medium', expected one of"):
        load_config(Job, None, ["mode=medium"])
    with pytest.raises(ConfigError, match=r"^count must be 0 or more, got -1$"):
        load_config(Job, None, ["count=-1"])
    with pytest.raises(ConfigError, match=r"inner\.nope"):
        load_config(Job, None, ["inner.nope=1"])


def test_flags_take_type_choices_and_help_from_the_dataclass():
    assert field_docs(Job) == {"mode": "fast: less work; slow: more.", "count": "How many, at most."}
    parser = argparse.ArgumentParser()
    add_flags(parser, Job, ["mode", "count", "undocumented"])
    actions = {a.dest: a for a in parser._actions}
    assert actions["mode"].choices == ("fast", "slow") and actions["mode"].help.endswith("(default: fast)")
    assert actions["count"].type is int and actions["count"].help == "How many, at most."
    args = parser.parse_args(["--count", "4"])
    assert flag_overrides(args, ["mode", "count"]) == ["count=4"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "medium"])


def test_presets_resolve_by_name_from_the_package(tmp_path):
    assert preset_names("stabilize") == ["cpu", "cpu-demo", "fast", "gavs"]
    assert "tiny-cpu" in preset_names("pretrain")
    path = resolve_preset("stabilize", "gavs")
    assert path.name == "gavs.yaml" and path.is_file()
    assert resolve_preset("stabilize", "gavs.yaml") == path
    own = tmp_path / "mine.yaml"
    own.write_text("strength: 2\n")
    assert resolve_preset("stabilize", own) == own  # a file wins
    expected = r"nope: no such config file or stabilize preset \(presets: cpu, cpu-demo, fast, gavs"
    with pytest.raises(ConfigError, match=expected):
        resolve_preset("stabilize", "nope")


@pytest.mark.slow
def test_the_wheel_ships_the_presets(tmp_path):
    """Presets must work from an installed wheel, not only from a checkout."""
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    # a copy, so setuptools' build folder neither lands in the checkout nor leaks stale files
    skip = shutil.ignore_patterns(".git", ".venv", "build", "outputs", "runs", "*.egg-info", "__pycache__")
    source = shutil.copytree(root, tmp_path / "source", ignore=skip)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*command, "-w", str(tmp_path), str(source)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("gavs-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for job, preset in (
        ("stabilize", "gavs"),
        ("stabilize", "cpu-demo"),
        ("pretrain", "base"),
        ("prep", "default"),
    ):
        assert f"configs/{job}/{preset}.yaml" in names
    assert {"common/config.py", "evaluation/cli.py", "configs/__init__.py"} <= names
