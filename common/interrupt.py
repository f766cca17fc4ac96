"""Stopping a long command cleanly: Ctrl-C (SIGINT), SIGTERM and SIGUSR1 (SLURM's warning
before a time limit or a preemption).

``stoppable()`` turns each of them into ``Interrupted``, raised in the main thread as soon as
Python runs again, so every ``finally`` and ``atomic_path`` cleans up on the way out, and
replaces whatever handler a library installed (pycolmap's glog prints a C++ stack trace on
SIGTERM). Code that stays in C++ for long (COLMAP's SfM) runs in a ``Child`` process, which
this process can wait on, and kill, at any moment. ``where()`` says what the run was doing,
for the one line the command prints (``interrupted_line``).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
_where: dict[str, str | None] = {"stage": None, "part": None, "detail": None}


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived. A KeyboardInterrupt, so that no ``except Exception`` (a batch's
    per-clip error handling, a library's retry) swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


@contextmanager
def stoppable() -> Iterator[None]:
    """Raise ``Interrupted`` on the first stop signal, and ignore the ones that follow while
    the run unwinds (a second Ctrl-C must not cut a cleanup short); restores the previous
    handlers on exit."""
    fired = []

    def handle(signum: int, frame: Any) -> None:
        if not fired:
            fired.append(signum)
            raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Name what the run is doing (``"finetuning"``) for the interruption's line."""
    with _within(stage=name, part=None, detail=None):
        yield


@contextmanager
def part(name: str | None) -> Iterator[None]:
    """Name which part of the stage runs (``"segment 2 of 3"``), said before the detail; None
    when there is nothing to tell apart."""
    with _within(part=name, detail=None):
        yield


@contextmanager
def _within(**where: str | None) -> Iterator[None]:
    outer = dict(_where)
    _where.update(where)
    try:
        yield
    except Interrupted:
        raise  # where() keeps the innermost place, for the command's line
    except BaseException:
        _where.update(outer)
        raise
    _where.update(outer)


def progress(detail: str) -> None:
    """Where inside the current stage the run is (``"step 212 of 630"``)."""
    _where["detail"] = detail


def where() -> str:
    if _where["stage"] is None:
        return "while starting"
    return ", ".join([f"during {_where['stage']}", *(_where[k] for k in ("part", "detail") if _where[k])])


def interrupted_line(command: str, err: Interrupted, *, resumable: bool = True) -> str:
    """The one line a command prints when stopped, after closing its progress bars (a live
    bar would otherwise leave the line half-drawn)."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
    verb = "interrupted" if err.signum == signal.SIGINT else f"stopped by {signal.Signals(err.signum).name}"
    advice = "; rerun the same command to resume" if resumable else ""
    return f"{command}: {verb} {where()}{advice}"


def serve() -> None:
    """The child's loop (``python -m common.interrupt``): read pickled calls from stdin, run
    each, write back pickled ``(ok, value)``."""
    # The protocol keeps the real stdout; fd 1 goes to stderr, so that a library printing
    # (COLMAP's C++ logs, say) cannot corrupt it.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    # The parent decides when to stop: Ctrl-C reaches the whole process group, so the child
    # ignores it; SIGTERM sent to it alone ends it at once, without any library's handler.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    while True:
        try:
            function, args, kwargs = pickle.load(sys.stdin.buffer)  # imports function's module
        except EOFError:
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # after the import, which may install its own
        try:
            reply = (True, function(*args, **kwargs))
        except Exception as err:  # every error goes back to the caller
            reply = (False, err)
        pickle.dump(reply, replies)
        replies.flush()


class Child:
    """A child process that runs calls one at a time, while this process waits in a way a
    signal can end. Closing it after an exception kills it::

        with Child() as child:
            poses = child.call(estimate_poses, frames, config)

    A fresh interpreter (not multiprocessing's spawn, which re-imports the caller's main
    script and so needs a ``__main__`` guard there), on this process's import path.
    """

    def __init__(self) -> None:
        path = os.pathsep.join(p for p in sys.path if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "common.interrupt"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path},
        )

    def call(self, function: Callable, *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` in the child; its exception is raised here."""
        try:
            pickle.dump((function, args, kwargs), self.process.stdin)
            self.process.stdin.flush()
            ok, value = pickle.load(self.process.stdout)
        except (EOFError, BrokenPipeError):
            code = self.process.wait()
            raise RuntimeError(f"the child process ended (exit code {code})") from None
        if not ok:
            raise value
        return value

    def close(self, *, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        # a stop that came while a call was being sent leaves part of it in the buffer: the
        # killed child cannot take it, and that is no error of its own to raise over the stop
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        self.process.wait()
        self.process.stdout.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, kind: type | None, *rest: object) -> None:
        self.close(kill=kind is not None)


if __name__ == "__main__":
    serve()
