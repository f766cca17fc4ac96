"""The one-call device check: what a fresh GPU machine shows about this project, in one
command of at most 8 minutes.

    python bench/device_check.py --out OUT            # on the GPU machine
    python bench/device_check.py --out OUT --quick    # CPU-sized, as the tests run it

Steps, each in its own process with its own time limit, so that one that fails or hangs
costs only itself:

1. ``build``: gsplat's CUDA kernels (``TORCH_CUDA_ARCH_LIST`` set from the device), timed;
2. ``gpu-tests``: ``pytest -m gpu``;
3. ``render``: ``bench/render.py``, gsplat against the PyTorch reference;
4. ``training``: ``bench/training.py``, the base config for a few hundred steps;
5. ``stabilize``: gavs-stabilize on a synthetic 300-frame 640x360 clip, with its per-stage
   times from the report.

Without CUDA the first two are skipped (and say so), and the rest run on the CPU. Writes
``OUT/device-check.json`` and ``OUT/device-check.md``; exits non-zero when a step failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from common.atomic import write_atomic

ROOT = Path(__file__).resolve().parents[1]
QUICK_STABILIZE = [
    "--resolution", "64", "finetune.min_steps=3", "finetune.steps_per_frame=0", "finetune.batch=2",
    "finetune.neighbours=1",
]  # fmt: skip


@dataclass
class Step:
    name: str
    command: list[str]
    timeout_s: float
    results: Path | None = None  # a JSON the command writes, read into the report
    env: dict[str, str] = field(default_factory=dict)
    skip: str | None = None  # why the step cannot run here


@dataclass
class Outcome:
    name: str
    status: str  # ok, failed, timed out, skipped
    seconds: float
    note: str
    results: dict | None


def cuda_arch() -> str:
    """``TORCH_CUDA_ARCH_LIST`` for this machine's GPU (9.0 on an H100 or H200)."""
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def steps(out: Path, quick: bool) -> list[Step]:
    python, cuda = sys.executable, torch.cuda.is_available()
    no_cuda = None if cuda else "no CUDA device here"
    build = "from model.rasterize_gsplat import gsplat_available as ok; raise SystemExit(0 if ok() else 1)"
    render = ["--sizes", "small", "--repeats", "1", "--backends", "cpu"] if quick else [
        "--sizes", "working,small,medium,1080p", "--repeats", "3",
    ]  # fmt: skip
    training = ["--config", "tiny-cpu", "--frame-size", "64x36", "--steps", "4", "--window", "2"]
    if not quick:
        training = ["--config", "base", "--frame-size", "448x256", "--steps", "300", "--window", "50"]
    clip = ["--width", "128", "--height", "72", "--frames", "24"] if quick else ["--frames", "300"]
    stabilize = QUICK_STABILIZE if quick else []
    return [
        Step("build", [python, "-c", build], 300, env={"TORCH_CUDA_ARCH_LIST": cuda_arch()} if cuda else {},
             skip=no_cuda),
        Step("gpu-tests", [python, "-m", "pytest", "-q", "-m", "gpu", "tests"], 120, skip=no_cuda),
        Step("render", [python, "bench/render.py", *render, "--out", str(out / "render.json")], 90,
             out / "render.json"),
        Step("training", [python, "bench/training.py", *training, "--out", str(out / "training.json")],
             150, out / "training.json"),
        Step("stabilize", [python, "-c", _STABILIZE, str(out / "clip"), str(out / "stable.mp4"),
                           json.dumps(clip), *stabilize], 180, out / "stable.report.json"),
    ]  # fmt: skip


# the clip made, then stabilized in the same process's command line: argv 1 the clip's folder,
# 2 the output, 3 the generator's arguments (JSON), the rest gavs-stabilize's
_STABILIZE = """
import json, sys
from data_prep.synthetic import main as synthetic
from infer.stabilize_cli import main as stabilize
folder, output, clip, rest = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4:]
synthetic([folder, "--quiet", *clip])
raise SystemExit(stabilize([f"{folder}/video.mp4", "-o", output, "--quiet", "--no-eval", *rest]))
"""


def run(step: Step) -> Outcome:
    if step.skip:
        return Outcome(step.name, "skipped", 0.0, step.skip, None)
    started = time.perf_counter()
    env = {**os.environ, **step.env, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(step.command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=step.timeout_s)  # fmt: skip
    except subprocess.TimeoutExpired:
        return Outcome(step.name, "timed out", step.timeout_s, f"over its {step.timeout_s:.0f} s", None)
    seconds = time.perf_counter() - started
    tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
    found = step.results is not None and step.results.is_file()
    results = json.loads(step.results.read_text()) if found else None
    ok = done.returncode == 0 and (step.results is None or found)
    return Outcome(step.name, "ok" if ok else "failed", seconds, " / ".join(tail)[-300:], results)


def summary(outcome: Outcome) -> str:
    """One line of what the step measured."""
    r = outcome.results
    if r is None:
        return outcome.note
    if outcome.name == "render":
        cells = [
            (x["backend"], x["width"], x["height"], x["forward_backward_images_per_s"]) for x in r["results"]
        ]
        return "; ".join(f"{b} {w}x{h}: {rate:.3g} img/s fwd+bwd" for b, w, h, rate in cells)
    if outcome.name == "training":
        return f"{r['config']}: {r['samples_per_s_median']:.2f} samples/s, peak {r['peak_memory_gb']:.2f} GB"
    if outcome.name == "stabilize":
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in r["timings_s"].items())
        return f"{r['frames']} frames {r['output_size'][0]}x{r['output_size'][1]}: {stages}"
    return outcome.note


def report(outcomes: list[Outcome], quick: bool) -> tuple[dict, str]:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    meta = {"device": device, "torch": torch.__version__, "quick": quick, "python": platform.python_version()}
    lines = [f"Device check on {device} (torch {torch.__version__}{', quick' if quick else ''})", "",
             "| step | status | seconds | result |", "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {o.name} | {o.status} | {o.seconds:.1f} | {summary(o)} |" for o in outcomes]
    return meta | {"steps": [asdict(o) for o in outcomes]}, "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for the JSON, the table and the outputs"
    )
    parser.add_argument("--quick", action="store_true", help="CPU-sized steps: a check of the check itself")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for step in steps(args.out.resolve(), args.quick):
        outcomes.append(run(step))
        print(f"{step.name}: {outcomes[-1].status} ({outcomes[-1].seconds:.1f} s)", flush=True)
    data, table = report(outcomes, args.quick)
    write_atomic(args.out / "device-check.json", json.dumps(data, indent=1))
    write_atomic(args.out / "device-check.md", table)
    print(table)
    return 1 if any(o.status in ("failed", "timed out") for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
