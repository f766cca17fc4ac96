"""The project's sbatch templates on a real SLURM cluster (``bash .ci/slurm.sh`` starts one).

Skipped where no cluster answers. What one node cannot show, a second node's rendezvous, is
tested with stand-ins in test_train_loop.py.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import FAST, TINY, shards_arg

from data_prep.cli import main as prep_main
from data_prep.synthetic import SyntheticConfig, generate
from data_prep.verify import verify
from data_prep.video import write_video
from model.release import check_sums, load_predictor

ROOT = Path(__file__).resolve().parents[1]


def _cluster_answers() -> str | None:
    """Why the tests cannot run here, or None when an idle node is there to run them."""
    if shutil.which("sbatch") is None:
        return "no sbatch here (start a cluster with: bash .ci/slurm.sh)"
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: slurmctld is not answering"
    if states.returncode or not {"idle", "mixed", "allocated"} & set(states.stdout.split()):
        return f"no usable SLURM node: {(states.stdout + states.stderr).strip() or 'sinfo printed nothing'}"
    return None


WHY_NOT = _cluster_answers()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=str(WHY_NOT))
# The templates ask for a GPU cluster's resources; one CI node has two cores and no GPU.
SMALL_JOB = ["--nodes=1", "--gpus-per-node=0", "--cpus-per-task=2", "--mem=6G"]


def _env(**extra: str) -> dict:
    """The test's environment for sbatch to export, with this interpreter's tools first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return {**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}", "OMP_NUM_THREADS": "1", **extra}


def submit(*args: str, folder: Path, env: dict | None = None) -> str:
    done = subprocess.run(
        ["sbatch", "--parsable", f"--chdir={folder}", *args],
        capture_output=True,
        text=True,
        env=env or _env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def job_fields(job: str) -> dict[str, str]:
    """``scontrol show job``'s key=value fields (completed jobs stay listed for MinJobAge, 300 s)."""
    shown = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, check=True)
    first = shown.stdout.splitlines()[0]  # an array's first task; every task reports the same fields
    return dict(part.split("=", 1) for part in first.split() if "=" in part)


def wait_for(job: str, timeout: float) -> None:
    """Until no task of ``job`` is pending or running."""
    deadline = time.time() + timeout
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
        if time.time() > deadline:
            subprocess.run(["scancel", job])
            pytest.fail(f"job {job} still queued or running after {timeout} s")
        time.sleep(1)


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/total"] for r in rows if "train/total" in r}


def test_prep_array_then_merge_and_verify(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for seed in (0, 1):
        clip = generate(SyntheticConfig(width=192, height=108, num_frames=18, seed=seed), progress=False)
        write_video(videos / f"scene{seed}.mp4", clip.frames, fps=30, crf=0)
    out = tmp_path / "dataset"
    small = ["max_side=160", "clip_length=16", "clip_stride=16", "shard_max_clips=2", "priors.flow=false"]
    script = ROOT / "slurm" / "prep_array.sbatch"
    array = ["--array=0-1", "--cpus-per-task=1", "--mem=3G", "--wait"]  # both tasks at once on 2 cores
    job = submit(*array, str(script), str(videos), str(out), *small, folder=tmp_path)
    logs = {p.name: p.read_text() for p in tmp_path.glob(f"gavs-prep-{job}_*.log")}
    assert sorted(logs) == [f"gavs-prep-{job}_0.log", f"gavs-prep-{job}_1.log"], logs
    assert job_fields(job)["JobState"] == "COMPLETED", logs

    parts = sorted(out.glob("part-*"))
    assert [p.name for p in parts] == ["part-0000", "part-0001"]
    assert prep_main(["merge", str(out), *map(str, parts)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["clips"] == 2 and manifest["totals"]["videos"] == 2  # a clip a task
    assert verify(out, every=100)["clips"] == 2


def test_pretraining_preempted_and_requeued_continues_the_loss_curve_then_releases(pretrain_shards, tmp_path):
    """Two tasks (gloo processes) on the node. USR1 to the batch script, as SLURM sends before
    the time limit: the template checkpoints and requeues the job, and the requeued job resumes
    and must repeat, step for step, the losses of a run that was never stopped."""
    script = ROOT / "slurm" / "pretrain.sbatch"
    steps = 20
    train = [str(TINY), shards_arg(pretrain_shards), *FAST, f"max_steps={steps}", "checkpoint_every=1000"]
    train.append("logging.tracker=none")
    env = _env(GAVS_PROCS_PER_NODE="2", CUDA_VISIBLE_DEVICES="")  # gloo on the CPU, also on GPU nodes

    straight = tmp_path / "straight"
    job = submit(*SMALL_JOB, "--wait", str(script), *train, f"run_dir={straight}", folder=tmp_path, env=env)
    log = tmp_path / f"gavs-train-{job}.log"
    assert job_fields(job)["JobState"] == "COMPLETED", log.read_text()[-3000:]

    preempted = tmp_path / "preempted"
    job = submit(*SMALL_JOB, str(script), *train, f"run_dir={preempted}", folder=tmp_path, env=env)
    log = tmp_path / f"gavs-train-{job}.log"
    deadline = time.time() + 240
    while not (preempted / "metrics.jsonl").exists() or len(losses(preempted)) < 4:
        assert time.time() < deadline, log.read_text()[-3000:] if log.exists() else "no log"
        time.sleep(0.5)
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True)
    while int(job_fields(job).get("Restarts", 0)) == 0:
        assert time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    # A requeued job starts again once its old credential has expired (AuthInfo cred_expire:
    # 10 s on the CI cluster, 120 s by default). Forcing an earlier start makes slurmd refuse
    # the launch ("Job credential revoked") and the job fails.
    wait_for(job, timeout=400)
    text = log.read_text()
    assert job_fields(job)["JobState"] == "COMPLETED", text[-3000:]
    assert "requeueing job" in text and "resumed from" in text, text[-3000:]
    expected, resumed = losses(straight), losses(preempted)
    assert sorted(resumed) == list(range(1, steps + 1))
    stopped_at = int(text.split("resumed from")[1].split("at step ")[1].split()[0])
    assert 4 <= stopped_at < steps
    for step in range(stopped_at + 1, steps + 1):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-6), step

    release = tmp_path / "release"
    command = f"gavs-release {preempted} {release} --fp16"
    job = submit("--wait", "--mem=2G", "--wrap", command, folder=tmp_path)
    assert job_fields(job)["JobState"] == "COMPLETED"
    assert (release / "SHA256SUMS").is_file()
    check_sums(release)
    assert load_predictor(release) is not None
