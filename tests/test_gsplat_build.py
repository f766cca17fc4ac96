"""Finding the CUDA toolkit for gsplat's build when the nvcc on PATH is a wrapper script."""

import os
import stat
from pathlib import Path

import pytest

from model.rasterize_gsplat import point_torch_at_the_toolkit, toolkit_of


def executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def wrapper_machine(tmp_path, monkeypatch):
    """A toolkit in ``cuda-x/`` and, first on PATH, a wrapper ``nvcc`` in ``wrap/bin`` (whose
    parent has no headers) that runs the toolkit's, as ``/usr/local/bin/nvcc`` does here."""
    toolkit = tmp_path / "cuda-x"
    (toolkit / "include").mkdir(parents=True)
    (toolkit / "include" / "cuda_runtime.h").write_text("")
    # the real nvcc's dry run reports its own folder as _HERE_ on stderr
    executable(toolkit / "bin" / "nvcc", f'#!/bin/sh\necho "#$ _HERE_={toolkit}/bin" >&2\n')
    wrapper = executable(tmp_path / "wrap" / "bin" / "nvcc", f'#!/bin/sh\nexec {toolkit}/bin/nvcc "$@"\n')
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    return toolkit, wrapper


def test_a_wrapper_nvcc_leads_to_the_toolkit_it_runs(wrapper_machine):
    toolkit, wrapper = wrapper_machine
    assert toolkit_of(str(wrapper)) == toolkit
    point_torch_at_the_toolkit()
    assert os.environ["CUDA_HOME"] == str(toolkit)


def test_a_set_cuda_home_is_left_alone(wrapper_machine, monkeypatch):
    monkeypatch.setenv("CUDA_HOME", "/somewhere/else")
    point_torch_at_the_toolkit()
    assert os.environ["CUDA_HOME"] == "/somewhere/else"


def test_an_nvcc_inside_its_toolkit_needs_no_help(wrapper_machine, monkeypatch):
    toolkit, _ = wrapper_machine
    monkeypatch.setenv("PATH", f"{toolkit / 'bin'}{os.pathsep}{os.environ['PATH']}")
    point_torch_at_the_toolkit()
    assert "CUDA_HOME" not in os.environ  # torch's own guess (the parent of bin/) is right


def test_an_nvcc_that_says_nothing_changes_nothing(tmp_path, monkeypatch):
    silent = executable(tmp_path / "bin" / "nvcc", "#!/bin/sh\nexit 1\n")
    monkeypatch.setenv("PATH", f"{silent.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    assert toolkit_of(str(silent)) is None
    point_torch_at_the_toolkit()
    assert "CUDA_HOME" not in os.environ
