"""Stopping and resuming long commands: real signals against real processes. Each stop ends
the command within a stated time, with one line, the shell's exit code (128 + the signal),
no C++ stack dump, no child process left and nothing half-written; a stopped finetuning
resumes to the same weights, bit for bit, as an uninterrupted run (CPU)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from helpers import QUICK_STABILIZE, ROOT
from safetensors.torch import load_file

from common import interrupt
from data_prep.synthetic import SyntheticConfig, generate
from data_prep.video import write_video
from infer.finetune import FinetuneConfig, Resumable, finetune
from infer.posing import decode_and_pose
from infer.stabilize import StabilizeConfig
from model.network import GaussianPredictor, NetworkConfig

SCENE = SyntheticConfig(width=256, height=144, num_frames=30, seed=4, shake_rotation_deg=2.0)
STOP_WITHIN_S = 5.0  # from the signal to the exit: a second of work in flight plus cleanup, on 2 busy cores
# six finetuning steps, each followed by a checkpoint: a stop can be placed between any two
STEPS = [*QUICK_STABILIZE, "--no-eval", "finetune.checkpoint_every_s=0"]
assert "--quiet" in STEPS


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("interrupt")
    write_video(folder / "shaky.mp4", generate(SCENE, progress=False).frames, fps=SCENE.fps)
    return folder / "shaky.mp4"


class Job:
    """A command run as a real process, its stderr read as it comes."""

    def __init__(self, command: list[str], cwd: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", *command], cwd=cwd, env=env, stderr=subprocess.PIPE, text=True
        )
        self.chunks: list[str] = []
        self.reader = threading.Thread(
            target=lambda: self.chunks.extend(iter(lambda: self.process.stderr.read(1), ""))
        )
        self.reader.start()

    def stderr(self) -> str:
        return "".join(self.chunks)

    def finish(self, timeout: float = 600) -> int:
        code = self.process.wait(timeout=timeout)
        self.reader.join()
        return code

    def wait_for(self, ready, timeout: float = 240.0) -> None:
        deadline = time.time() + timeout
        while not ready():
            assert self.process.poll() is None, self.stderr()[-3000:]
            assert time.time() < deadline, "the stage to stop never began"
            time.sleep(0.05)

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def stop(self, signum: int) -> tuple[int, str, float, list[psutil.Process]]:
        """Send ``signum``; the exit code, stderr, seconds to exit, and the children it had."""
        children = self.children()
        sent = time.perf_counter()
        self.process.send_signal(signum)
        code = self.finish(timeout=60)
        return code, self.stderr(), time.perf_counter() - sent, children


def stabilize(clip: Path, out: Path, work: Path, *, quiet: bool = True) -> Job:
    steps = STEPS if quiet else [a for a in STEPS if a != "--quiet"]
    return Job(
        ["infer.stabilize_cli", str(clip), "-o", str(out), "--work-dir", str(work), *steps], out.parent
    )


def left_running(children: list[psutil.Process]) -> list[psutil.Process]:
    """The children still running 3 s after the command's exit (multiprocessing's resource
    tracker leaves when it sees its parent gone)."""
    return psutil.wait_procs(children, timeout=3)[1]


def lines(stderr: str) -> list[str]:
    """stderr's lines, progress bars' redraws included (they end in a carriage return), after
    the run's first line when that is its preset and estimate, printed before any work."""
    found = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    first = r"gavs-(stabilize|render): (preset \S+|settings as given) on \w+: "
    announced = found and re.match(first, found[0])
    return found[1:] if announced else found


def test_sigint_during_posing_stops_sfm_at_once(clip, tmp_path):
    work = tmp_path / "work"
    job = stabilize(clip, tmp_path / "out.mp4", work)
    # SfM runs in a child process: once there is one, the pose stage is in COLMAP's C++
    job.wait_for(lambda: job.children())
    time.sleep(0.5)  # the child is importing COLMAP, or running it
    code, stderr, seconds, children = job.stop(signal.SIGINT)
    assert code == 130 and seconds < STOP_WITHIN_S, (code, seconds, stderr)
    assert lines(stderr) == [
        "gavs-stabilize: interrupted during posing, shot 1 of 1; rerun the same command to resume"
    ]
    assert children and not left_running(children)
    assert not list(tmp_path.glob("*.mp4")) and not list(tmp_path.glob(".*partial*"))


def test_sigterm_ends_with_one_line_and_no_stack_dump(clip, tmp_path):
    job = stabilize(clip, tmp_path / "out.mp4", tmp_path / "work")
    job.wait_for(lambda: job.children())
    time.sleep(0.5)
    code, stderr, seconds, children = job.stop(signal.SIGTERM)
    assert code == 143 and seconds < STOP_WITHIN_S, (code, seconds, stderr)
    assert "Aborted" not in stderr and "stack trace" not in stderr and "Traceback" not in stderr
    assert lines(stderr) == [
        "gavs-stabilize: stopped by SIGTERM during posing, shot 1 of 1; rerun the same command to resume"
    ]
    assert not left_running(children)


def final_weights(work: Path) -> dict[str, torch.Tensor]:
    [model] = (work / "finetune").glob("*/model.safetensors")
    return load_file(model)


@pytest.fixture(scope="module")
def whole(clip) -> Path:
    """The work folder of an uninterrupted run."""
    work = clip.parent / "whole"
    job = stabilize(clip, clip.parent / "whole.mp4", work)
    assert job.finish() == 0, job.stderr()[-3000:]
    return work


def test_a_stopped_finetuning_resumes_to_the_same_weights(clip, whole, tmp_path):
    stopped = tmp_path / "stopped"
    shutil.copytree(whole / "poses", stopped / "poses")  # the same poses: SfM is not tested here
    job = stabilize(clip, tmp_path / "out.mp4", stopped)
    job.wait_for(lambda: any(int(p.name[5:]) >= 2 for p in stopped.glob("finetune/*.resume/step-*")))
    code, stderr, seconds, _ = job.stop(signal.SIGINT)
    assert code == 130 and seconds < STOP_WITHIN_S, (code, seconds, stderr)
    [line] = lines(stderr)
    assert line.startswith("gavs-stabilize: interrupted during finetuning, step ") and " of 6; rerun" in line
    assert not (tmp_path / "out.mp4").exists()

    job = stabilize(clip, tmp_path / "out.mp4", stopped)
    assert job.finish() == 0, job.stderr()[-3000:]
    report = json.loads((tmp_path / "out.report.json").read_text())
    [segment] = report["segments"]
    assert 2 <= segment["finetune_resumed_from_step"] < 6 and len(segment["finetune_curve"]) == 6
    resumed, reference = final_weights(stopped), final_weights(whole)
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    assert not list(stopped.glob("finetune/*.resume"))  # the checkpoints go once the result is saved


def test_sigint_during_rendering_leaves_no_output(clip, whole, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(whole, work)  # poses and finetuning done: the run goes straight to rendering
    job = stabilize(clip, tmp_path / "out.mp4", work, quiet=False)
    job.wait_for(lambda: re.search(r"render:[^\r\n]*\| 1/", job.stderr()))  # a batch is out
    code, stderr, seconds, _ = job.stop(signal.SIGINT)
    assert code == 130 and seconds < STOP_WITHIN_S, (code, seconds, stderr)
    line = lines(stderr)[-1]
    assert line.startswith("gavs-stabilize: interrupted during rendering and writing, frame "), line
    assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_sigint_during_a_gavs_render_leaves_no_output(clip, whole, tmp_path):
    steps = [a for a in STEPS if a not in ("--quiet", "--no-eval")]  # gavs-render does not evaluate
    out = tmp_path / "push.mp4"
    command = ["infer.render_cli", str(clip), "-o", str(out), "--path", "push-in", "--work-dir", str(whole)]
    job = Job([*command, *steps], tmp_path)
    job.wait_for(lambda: re.search(r"render:[^\r\n]*\| 1/", job.stderr()))
    code, stderr, seconds, _ = job.stop(signal.SIGINT)
    assert code == 130 and seconds < STOP_WITHIN_S, (code, seconds, stderr)
    line = lines(stderr)[-1]
    assert line.startswith("gavs-render: interrupted during rendering and writing, frame "), line
    assert "Traceback" not in stderr and not list(tmp_path.iterdir())


def test_prep_workers_are_all_gone_after_sigint(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for seed in (0, 1):
        frames = generate(
            SyntheticConfig(width=192, height=108, num_frames=34, seed=seed), progress=False
        ).frames
        write_video(videos / f"scene{seed}.mp4", frames, fps=30, crf=0)
    out = tmp_path / "shards"
    job = Job(["data_prep.cli", "build", "--input", str(videos), "--out", str(out), "--workers", "2",
                 "--quiet", "max_side=160", "clip_length=16", "clip_stride=8"], tmp_path)  # fmt: skip
    job.wait_for(lambda: len(job.children()) >= 2)
    time.sleep(1.0)  # into the workers' SfM
    code, stderr, seconds, children = job.stop(signal.SIGINT)
    assert code == 130 and seconds < STOP_WITHIN_S, (code, seconds, stderr)
    [line] = lines(stderr)
    assert line.startswith("gavs-prep: interrupted during building clips, video "), line
    assert line.endswith("; rerun the same command to resume"), line
    assert len(children) >= 2 and not left_running(children)
    assert not list(out.glob(".cache/*/.*.sfm")) and not list(out.glob("*.tar"))


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_damaged_checkpoint_is_skipped_for_the_one_before(clip, tmp_path, one_thread):
    """In one process: six steps with a checkpoint after each; the newest is then truncated,
    as by a kill in the middle of a save that bypassed the rename. Resuming warns, takes the
    one before, and finishes on the uninterrupted run's weights. One thread, as in the
    subprocess tests: with two, torch's CPU backward is not bit-reproducible (measured: two
    uninterrupted runs differ), so no resume could match it bit for bit."""
    decoded, _, _ = decode_and_pose(clip, tmp_path / "work", resolution=96)
    [segment] = decoded.segments
    posed = decoded.posed(segment)
    config = FinetuneConfig(min_steps=6, steps_per_frame=0, batch=2, neighbours=2, checkpoint_every_s=0)

    def run(resume):
        torch.manual_seed(0)
        net = GaussianPredictor(NetworkConfig())
        torch.manual_seed(0)
        finetune(
            net,
            posed.frames,
            posed.poses,
            config,
            pad=0.1,
            device=torch.device("cpu"),
            progress=False,
            resume=resume,
        )
        return net.state_dict()

    warnings = []
    first = Resumable(tmp_path / "state", every_s=0, warn=warnings.append)
    reference = run(first)
    saved = first.steps()
    assert [p.name for p in saved] == ["step-000005", "step-000004"] and not warnings
    weights = saved[0] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    again = Resumable(tmp_path / "state", every_s=3600, warn=warnings.append)
    resumed = run(again)
    assert again.resumed_from == 4
    assert len(warnings) == 1 and "step-000005" in warnings[0] and "does not load" in warnings[0]
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_the_stop_line_names_the_innermost_stage_and_progress():
    with pytest.raises(interrupt.Interrupted) as caught:
        with interrupt.stage("rendering"):
            interrupt.progress("frame 3 of 9")
            raise interrupt.Interrupted(signal.SIGUSR1)
    assert caught.value.exit_code == 128 + signal.SIGUSR1
    assert interrupt.interrupted_line("gavs-x", caught.value, resumable=False) == (
        "gavs-x: stopped by SIGUSR1 during rendering, frame 3 of 9"
    )
    with interrupt.stage("evaluation"):
        pass
    assert interrupt.where() == "during rendering, frame 3 of 9"  # a finished stage restores the outer


def test_the_stop_line_says_which_segment_of_several_was_finetuning():
    with pytest.raises(interrupt.Interrupted) as caught:
        with interrupt.stage("finetuning"):
            with interrupt.part("segment 1 of 2"):
                interrupt.progress("step 6 of 6")
            with interrupt.part("segment 2 of 2"):
                interrupt.progress("step 3 of 6")
                raise interrupt.Interrupted(signal.SIGINT)
    assert interrupt.interrupted_line("gavs-x", caught.value) == (
        "gavs-x: interrupted during finetuning, segment 2 of 2, step 3 of 6; rerun the same command to resume"
    )
    with interrupt.stage("finetuning"):
        with interrupt.part(None):  # one segment: nothing to tell apart
            interrupt.progress("step 3 of 6")
            assert interrupt.where() == "during finetuning, step 3 of 6"


def test_a_child_runs_calls_and_raises_their_errors():
    with interrupt.Child() as child:
        assert child.call(np.add, 2, 3) == 5
        with pytest.raises(ValueError, match="invalid literal"):
            child.call(int, "x")
        process = child.process
    assert process.returncode == 0


def test_a_stop_while_a_call_is_sent_raises_the_stop_not_a_broken_pipe():
    """The stop came with part of a call still in the pipe's buffer, and the child died
    before the buffer was flushed: the command still sees the stop (CI once saw exit 2)."""
    with pytest.raises(interrupt.Interrupted), interrupt.Child() as child:
        child.process.stdin.write(b"part of a pickled call")
        child.process.kill()
        child.process.wait()
        raise interrupt.Interrupted(signal.SIGINT)


def test_a_stop_during_posing_keeps_the_shots_already_posed(tmp_path):
    """Two shots; stopped once the first is posed. The rerun takes shot 0 from the work
    folder: a mark put into its stored reason comes through to the final record."""
    shots = [generate(replace(SCENE, seed=seed), progress=False).frames for seed in (4, 5)]
    path = write_video(tmp_path / "cut.mp4", np.concatenate(shots), fps=SCENE.fps)
    work = tmp_path / "work"
    job = stabilize(path, tmp_path / "out.mp4", work)
    job.wait_for(lambda: list(work.glob("poses/*.shots/shot-0/segments.json")))
    code, stderr, _, _ = job.stop(signal.SIGINT)
    assert code == 130 and lines(stderr)[-1].startswith(
        "gavs-stabilize: interrupted during posing, shot 2 of 2"
    ), (code, stderr)
    [kept] = work.glob("poses/*.shots/shot-0/segments.json")
    records = json.loads(kept.read_text())
    records[0]["reason"] += " (kept)"
    kept.write_text(json.dumps(records))

    decoded, _, cached = decode_and_pose(path, work, resolution=128, config=StabilizeConfig().poses)
    assert not cached and len(decoded.shots) == 2
    assert [s.reason.endswith(" (kept)") for s in decoded.segments] == [True] + [False] * (
        len(decoded.segments) - 1
    )
    assert not list(work.glob("poses/*.shots"))  # folded into the clip's record


def sfm_running(pid: int) -> bool:
    """Whether a process under ``pid`` is the pose stage's SfM child."""
    for process in psutil.Process(pid).children(recursive=True):
        try:
            if "common.interrupt" in process.cmdline():
                return True
        except psutil.Error:  # a short-lived helper (grep, sed) gone or a zombie meanwhile
            continue
    return False


def test_the_stabilize_array_template_requeues_on_usr1(clip, tmp_path):
    """slurm/stabilize_array.sbatch with a stand-in scontrol (no SLURM here): USR1 stops the
    clip with one line and requeues the task; the template itself exits 0."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(
        '#!/usr/bin/env bash\n[[ $1 == requeue ]] && echo "$2" >> "$REQUEUED"\n'
    )
    (bin_dir / "gavs-stabilize").write_text(
        f'#!/usr/bin/env bash\nexec {sys.executable} -m infer.stabilize_cli "$@"\n'
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    (tmp_path / "clips.txt").write_text(f"# clips\n\n{clip}\n")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "SLURM_JOB_ID": "77",
        "SLURM_ARRAY_JOB_ID": "70",
        "SLURM_ARRAY_TASK_ID": "0",
        "REQUEUED": str(tmp_path / "requeued"),
        "OMP_NUM_THREADS": "1",
    }
    script = ROOT / "slurm" / "stabilize_array.sbatch"
    job = subprocess.Popen(["bash", str(script), "clips.txt", "stable/", *STEPS], cwd=tmp_path, env=env,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 120
    while not sfm_running(job.pid):  # gavs-stabilize, under the template, is in its pose stage
        assert job.poll() is None and time.time() < deadline, job.communicate()[1][-3000:]
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 0, stderr
    assert (tmp_path / "requeued").read_text().split() == ["70_0"]
    assert "gavs-stabilize: stopped by SIGTERM during posing" in stderr and "Aborted" not in stderr
    assert not list((tmp_path / "stable").glob("*.mp4"))
