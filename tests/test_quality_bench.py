"""bench/quality.py end to end on one tiny clip: input, vid.stab and a user command."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

from data_prep.synthetic import SyntheticConfig, generate
from data_prep.video import write_video

ROOT = Path(__file__).resolve().parents[1]


def test_quality_bench_scores_input_vidstab_and_a_command(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    clip = generate(
        SyntheticConfig(width=192, height=108, num_frames=16, shake_rotation_deg=1.5, seed=4), progress=False
    )
    write_video(clips / "tiny.mp4", clip.frames, fps=30)
    copy = f'{sys.executable} -c "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])" {{in}} {{out}}'
    # a stabilizer that writes OUT.report.json beside its output, as gavs-stabilize does
    origins = {"source": 0.9, "neighbours": 0.06, "extrapolated": 0.03, "inpainted": 0.01}
    report = json.dumps({"pixel_origins": {"mean": origins}, "seconds_per_frame": {"render": 0.5}})
    reporting = (
        f'{sys.executable} -c "import pathlib, shutil, sys; shutil.copy(sys.argv[1], sys.argv[2]); '
        f"pathlib.Path(sys.argv[2]).with_suffix('.report.json').write_text(sys.argv[3])\" "
        f"{{in}} {{out}} {shlex.quote(report)}"
    )
    out = tmp_path / "quality.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "quality.py"),
            "--clips",
            str(clips),
            "--method",
            f"copy={copy}",
            "--method",
            f"reporting={reporting}",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = {row["method"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"input", "vidstab", "copy", "reporting"}
    assert rows["copy"]["C"] > 0.999 and rows["copy"]["sharpness"] > 0.99  # the copy is the input
    assert rows["vidstab"]["C"] < 0.95  # vid.stab crops and zooms by default
    assert rows["vidstab"]["seconds_per_frame"] > 0
    assert "| tiny | vidstab |" in result.stdout
    assert "origin_inpainted" not in rows["copy"]  # no report, no origins
    assert rows["reporting"]["origin_inpainted"] == 0.01 and rows["reporting"]["origin_source"] == 0.9
    assert rows["reporting"]["stage_seconds_per_frame"] == {"render": 0.5}
    assert "| 0.01000 |" in result.stdout


def test_quality_bench_rejects_a_method_without_placeholders(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "quality.py"),
            "--clips",
            str(tmp_path),
            "--method",
            "x=cp a b",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "{in} and {out}" in result.stderr
