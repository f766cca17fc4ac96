"""Fit the unit costs behind gavs-stabilize's time estimate (``configs/costs.yaml``) to runs.

    python bench/costs.py RUN.report.json [...] [--out bench/results/costs.json]

Each report gives a run's stage times and its work: frames, the working and output sizes,
and the finetuning steps and renders (steps x batch x (neighbours + 1), summed over its
segments). Per stage, a least-squares fit through the origin of seconds on work gives the
unit costs: poses on frames x working megapixels; finetuning on steps x and renders x working
megapixels (a step's network passes and update come once, however many views it renders);
render on frames x working and frames x output megapixels; evaluation on frames. The fit
needs runs that vary what each pair of columns counts (renders per step; output size
against working size). Prints the costs, in ``configs/costs.yaml``'s keys, and each run's
estimate against its measured time; writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from common.atomic import write_atomic

STAGES = {  # stage: (the costs.yaml keys, the columns of work they multiply)
    "poses": (["poses_per_frame_mpx"], lambda w: [w["frames"] * w["work_mpx"]]),
    "finetune": (
        ["finetune_per_step_mpx", "finetune_per_render_mpx"],
        lambda w: [w["steps"] * w["work_mpx"], w["renders"] * w["work_mpx"]],
    ),
    "render": (
        ["render_per_frame_mpx", "write_per_frame_mpx"],
        lambda w: [w["frames"] * w["work_mpx"], w["frames"] * w["out_mpx"]],
    ),
    "evaluate": (["evaluate_per_frame"], lambda w: [w["frames"]]),
}


def work(report: dict) -> dict[str, float]:
    """What a run did, in the units the costs are per."""
    tuning = report["config"]["finetune"]
    steps = sum(len(s.get("finetune_curve", [])) for s in report["segments"] if not s.get("cached_finetune"))
    width, height = report["working_size"]
    out_width, out_height = report["output_size"]
    return {
        "frames": report["frames"],
        "work_mpx": width * height / 1e6,
        "out_mpx": out_width * out_height / 1e6,
        "steps": steps,
        "renders": steps * tuning["batch"] * (tuning["neighbours"] + 1),
    }


def seconds(report: dict, stage: str) -> float | None:
    """The stage's measured seconds; render counts the write stage too (some code had one)."""
    timings = report["timings_s"]
    if stage not in timings:
        return None
    return timings[stage] + (timings.get("write", 0.0) if stage == "render" else 0.0)


def fit(reports: list[dict]) -> dict[str, float]:
    costs = {}
    for stage, (keys, columns) in STAGES.items():
        rows = [(columns(work(r)), seconds(r, stage)) for r in reports if seconds(r, stage) is not None]
        if not rows:
            continue
        x, y = np.array([c for c, _ in rows], float), np.array([t for _, t in rows], float)
        solution = np.linalg.lstsq(x, y, rcond=None)[0].clip(min=0)
        costs |= {key: round(float(v), 3) for key, v in zip(keys, solution, strict=True)}
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "costs.json")
    args = parser.parse_args()
    reports = [json.loads(p.read_text()) for p in args.reports]
    costs = fit(reports)
    print("\n".join(f"{k}: {v}" for k, v in costs.items()))
    print("\n| run | frames | measured s | estimated s | ratio |\n|---|---|---|---|---|")
    rows = []
    for path, report in zip(args.reports, reports, strict=True):
        amount = work(report)
        estimate = sum(
            sum(costs.get(k, 0) * c for k, c in zip(keys, columns(amount), strict=True))
            for stage, (keys, columns) in STAGES.items()
            if stage in report["timings_s"]
        )
        measured = sum(seconds(report, stage) or 0.0 for stage in STAGES)
        rows.append({"run": path.name, **amount, "measured_s": measured, "estimated_s": estimate})
        cells = [
            path.name,
            amount["frames"],
            f"{measured:.0f}",
            f"{estimate:.0f}",
            f"{estimate / measured:.2f}",
        ]
        print("| " + " | ".join(map(str, cells)) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, json.dumps({"costs": costs, "runs": rows}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
