"""gavs-stabilize on the clips users have: a portrait phone clip (display rotation, odd size,
10-bit HLG, variable frame rate, audio), a clip with a hard cut and an unposable stretch,
and a truncated file. The corpus is built here from the synthetic clip."""

import json
import subprocess
from dataclasses import replace
from fractions import Fraction

import av
import cv2
import imageio_ffmpeg
import numpy as np
import pytest
from helpers import QUICK_STABILIZE

from data_prep.synthetic import SyntheticConfig, generate
from data_prep.video import Colour, Encoding, VideoReader, VideoWriter, probe, read_video, write_video
from evaluation.metrics import evaluate
from infer.render_cli import main as render_main
from infer.stabilize_cli import main as stabilize_main

QUICK = QUICK_STABILIZE
HLG_BT2020 = Colour(matrix=9, range=1, primaries=9, transfer=18)
TICK = Fraction(1, 600)
DURATIONS = [20, 30]  # ticks: frames alternate 1/30 s and 1/20 s, a variable frame rate
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-y", *map(str, args)], check=True)


def tone(path, seconds: float) -> None:
    """AAC audio: a 440 Hz tone."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=48000)
        samples = (0.2 * np.sin(np.arange(int(48000 * seconds)) * 2 * np.pi * 440 / 48000)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(samples[None], format="fltp", layout="mono")
        frame.sample_rate = 48000
        out.mux(stream.encode(frame))
        out.mux(stream.encode())


def phone_clip(folder):
    """Portrait 91x161 as displayed, stored as 161x91 with a 90-degree display rotation;
    10-bit 4:4:4 BT.2020 HLG; variable frame rate; AAC audio. Returns the path and the
    upright frames."""
    upright = generate(
        SyntheticConfig(width=91, height=161, num_frames=30, seed=4, shake_rotation_deg=2.0), progress=False
    ).frames
    stored = np.rot90(upright, -1, axes=(1, 2))  # a player turns it back by 90 degrees
    pts = np.concatenate([[0], np.cumsum([DURATIONS[t % 2] for t in range(len(stored) - 1)])])
    encoding = Encoding(161, 91, 24, TICK, bit_depth=10, chroma="444", colour=HLG_BT2020, crf=10)
    with VideoWriter(folder / "video.mkv", encoding) as writer:
        for image, p in zip(stored, pts, strict=True):
            writer.write(image.astype(np.uint16) * 257, int(p))
    tone(folder / "tone.m4a", float(pts[-1] * TICK) + 0.1)
    path = folder / "phone.mp4"
    ffmpeg(
        "-display_rotation:v:0", 90, "-i", folder / "video.mkv", "-i", folder / "tone.m4a",
        "-map", "0:v", "-map", "1:a", "-c", "copy", path,
    )  # fmt: skip
    return path, upright


@pytest.fixture(scope="module")
def phone(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phone")
    path, upright = phone_clip(folder)
    out = folder / "out.mp4"
    assert stabilize_main([str(path), "-o", str(out), *QUICK]) == 0
    return path, upright, out, json.loads(out.with_suffix(".report.json").read_text())


def test_a_phone_clip_stays_upright_at_its_odd_size(phone):
    path, upright, out, report = phone
    source, result = probe(path), probe(out)
    assert source.rotation == 90 and source.size == (91, 161)
    assert result.rotation == 0 and result.size == (91, 161)  # upright in any player, same size
    assert result.chroma == "444"  # 4:2:0 cannot hold an odd size; the input was 4:4:4 already
    frames = read_video(out).frames
    # upright: the output looks like the upright input, not like it turned half a turn
    # (a quarter turn would not even have the same shape)
    error = np.abs(frames.astype(int) - upright).mean()
    turned = np.abs(frames.astype(int) - np.rot90(upright, 2, axes=(1, 2))).mean()
    assert error < 0.5 * turned, (error, turned)
    assert report["metrics"]["output"]["jitter_px"] < report["metrics"]["input"]["jitter_px"]


def test_a_10_bit_hlg_clip_comes_out_10_bit_with_its_colour_tags(phone):
    _, _, out, report = phone
    result = probe(out)
    assert result.bit_depth == 10 and result.colour == HLG_BT2020
    assert report["encoding"]["pix_fmt"] == "yuv444p10le"
    deep = next(iter(VideoReader(out, depth=16))).image
    assert deep.dtype == np.uint16 and (deep % 257 != 0).mean() > 0.5  # more than 8 bits of levels


def test_variable_frame_rate_timestamps_and_audio_stay_in_sync(phone):
    path, _, out, _ = phone
    times_in = [f.time for f in VideoReader(path)]
    times_out = [f.time for f in VideoReader(out)]
    with av.open(str(out)) as container:
        tick = float(container.streams.video[0].time_base)
    assert len(times_out) == len(times_in)
    assert np.abs(np.subtract(times_out, times_in)).max() <= tick  # within one tick
    assert np.ptp(np.diff(times_out)) > 0.015  # still variable: 1/30 and 1/20 s

    def audio(file):
        with av.open(str(file)) as container:
            stream = container.streams.audio[0]
            packets = [(p.pts, bytes(p)) for p in container.demux(stream) if p.size]
            return stream.codec_context.name, float(stream.time_base), packets

    name_in, base_in, packets_in = audio(path)
    name_out, base_out, packets_out = audio(out)
    # the audio is copied untouched, from the same start, against the same video timestamps
    assert name_out == name_in == "aac" and base_out == base_in
    # (the tone runs 0.1 s past the last frame: the output's audio ends with the video)
    assert packets_out == packets_in[: len(packets_out)] and len(packets_out) < len(packets_in)
    assert (packets_out[-1][0] + 1024) * base_out >= times_in[-1]


def dimmed_and_cut(folder):
    """Shot A (60 frames) dims to 6% of its light over frames 22-37, which SfM cannot pose;
    then a hard cut to shot B (30 frames, another scene). Returns the path and the gains."""
    config = SyntheticConfig(width=256, height=144, num_frames=60, seed=4, shake_rotation_deg=2.0)
    a = generate(config, progress=False).frames.astype(float)
    gain = np.ones(60)
    gain[19:41] = [0.765, 0.53, 0.295, *[0.06] * 16, 0.295, 0.53, 0.765]
    a = (a * gain[:, None, None, None]).round().astype(np.uint8)
    b = generate(replace(config, num_frames=30, seed=11), progress=False).frames
    path = write_video(folder / "cut.mp4", np.concatenate([a, b]), fps=30)
    return path, np.concatenate([gain, np.ones(30)])


def undimmed(frames: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """The frames with the dimming undone, so that matching can score them."""
    return np.clip(frames / gain[:, None, None, None], 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def cut(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cut")
    path, gain = dimmed_and_cut(folder)
    out = folder / "out.mp4"
    assert stabilize_main([str(path), "-o", str(out), "--no-eval", *QUICK]) == 0
    return path, gain, out, json.loads(out.with_suffix(".report.json").read_text())


def test_each_shot_is_stabilized_on_its_own(cut):
    path, gain, out, report = cut
    assert report["shots"] == [[0, 60], [60, 90]]
    assert all(s["end"] <= 60 or s["start"] >= 60 for s in report["segments"])  # none spans the cut
    frames_in, frames_out = undimmed(read_video(path).frames, gain), undimmed(read_video(out).frames, gain)
    assert len(frames_out) == 90
    for start, end in report["shots"]:
        scores = evaluate(frames_in[start:end], frames_out[start:end], 30, progress=False)
        assert scores["output"]["jitter_px"] < 0.6 * scores["input"]["jitter_px"], (start, scores)


def test_an_unposable_stretch_gets_a_labelled_2d_path_that_is_steadier(cut):
    path, gain, out, report = cut
    methods = report["frame_methods"]
    planar = [t for t, m in enumerate(methods) if m == "2d"]
    assert planar == report["planar_frames"]
    # the dark frames, and only frames near them
    assert set(range(24, 36)) <= set(planar) <= set(range(18, 42)), planar
    [segment] = [s for s in report["segments"] if s["method"] == "2d"]
    assert "global" in segment["reason"] and segment["smoothing"]["joined_frames"] > 0  # joined to 3D
    # steadier than the input: scored with the dimming undone
    frames_in = undimmed(read_video(path).frames, gain)[planar]
    frames_out = undimmed(read_video(out).frames, gain)[planar]
    scores = evaluate(frames_in, frames_out, 30, progress=False)
    assert scores["output"]["jitter_px"] < 0.7 * scores["input"]["jitter_px"], scores


def test_depth_of_a_cut_clip_stays_inside_each_segment_and_is_unknown_on_2d_frames(cut):
    path, _, out, report = cut
    depth = out.parent / "depth"
    work = ["--work-dir", str(out.parent / ".out.gavs-work"), "depth.compare=false"]
    assert render_main([str(path), "-o", str(depth), "--depth", *work, *QUICK]) == 0
    fields = json.loads((depth / "depth.json").read_text())
    planar = report["planar_frames"]
    assert fields["frames_without_depth"] == planar
    assert [t for t, camera in enumerate(fields["cameras"]) if camera is None] == planar
    values = [cv2.imread(str(depth / "depth" / f"{t:06d}.png"), cv2.IMREAD_UNCHANGED) for t in range(90)]
    assert all(not values[t].any() for t in planar)  # 0: unknown
    assert all(values[t].all() for t in range(90) if t not in planar)
    preview = read_video(depth / "preview.mp4").frames
    # black where unknown, up to H.264's rounding of a black frame predicted from coloured ones
    assert (
        len(preview) == 90
        and preview[planar].max() <= 4
        and preview[np.setdiff1d(range(90), planar)].max() > 100
    )
    # consistency compares frames of one 3D segment only: each has its own SfM world
    segments = [s for s in json.loads((depth / "report.json").read_text())["segments"] if s["method"] == "3d"]
    pairs = json.loads((depth / "report.json").read_text())["readout"]["sources"]["finetuned"][
        "consistency_pairs"
    ]
    segment_of = {t: k for k, s in enumerate(segments) for t in range(s["start"], s["end"])}
    assert pairs and all(segment_of[t] == segment_of[n] for t, n, *_ in pairs)


def test_a_truncated_file_is_stabilized_with_a_warning_or_refused_with_strict(tmp_path, capsys):
    frames = generate(
        SyntheticConfig(width=128, height=72, num_frames=40, seed=4, shake_rotation_deg=2.0), progress=False
    ).frames
    whole = tmp_path / "whole.avi"
    with av.open(str(whole), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 128, 72, "yuv420p"
        stream.options = {"qscale": "2", "g": "1"}  # every frame a key frame: a cut loses whole frames
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.75)])
    decoded = len(read_video(cut).frames)
    assert 16 < decoded < 40

    out = tmp_path / "out.mp4"
    assert stabilize_main([str(cut), "-o", str(out), "--strict", *QUICK]) == 2
    err = capsys.readouterr().err
    assert "damaged or truncated" in err and "(--strict)" in err and not out.exists()
    assert not (tmp_path / ".out.gavs-work").exists()  # refused before any pose work

    assert stabilize_main([str(cut), "-o", str(out), "--no-eval", *QUICK]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"{decoded} frames decoded, the container promises 40 frames" in warnings[0]
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["warnings"] == [warnings[0].removeprefix("warning: ")] and report["frames"] == decoded
    assert len(read_video(out).frames) == decoded


def test_an_output_that_cannot_be_written_fails_before_any_work(tmp_path, capsys):
    video = write_video(tmp_path / "in.mp4", np.full((8, 72, 128, 3), 90, np.uint8), fps=30)
    assert stabilize_main([str(video), "-o", str(tmp_path / "out.xyz"), *QUICK]) == 2
    assert "out.xyz: cannot be written" in capsys.readouterr().err
    assert not (tmp_path / ".out.gavs-work").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "in.mp4"
    ]


def test_a_batch_goes_on_past_a_failed_clip_and_ends_with_a_table(tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    frames = generate(
        SyntheticConfig(width=128, height=72, num_frames=20, seed=4, shake_rotation_deg=2.0), progress=False
    ).frames
    write_video(clips / "a.mp4", frames, fps=30)
    (clips / "b.mp4").write_bytes(b"not a video" * 100)
    write_video(clips / "c.mp4", frames[::-1], fps=30)
    code = stabilize_main([str(clips / "*.mp4"), "-o", f"{tmp_path / 'out'}/", "--no-eval", *QUICK])
    captured = capsys.readouterr()
    assert code == 2  # one clip failed
    assert "b.mp4: cannot be decoded" in captured.err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mp4")) == [
        "a.stabilized.mp4",
        "c.stabilized.mp4",
    ]
    table = [line for line in captured.out.splitlines() if line.startswith("| ")]
    assert len(table) == 4 and "failed" in table[2] and "a.stabilized.mp4" in table[1]


def test_too_little_disk_space_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """The estimate needs more than is free: the run stops before decoding. (The free space
    is the one thing faked here: a full disk cannot be made on demand.)"""
    import shutil

    video = write_video(tmp_path / "in.mp4", np.full((8, 72, 128, 3), 90, np.uint8), fps=30)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12, 1000))
    assert stabilize_main([str(video), "-o", str(tmp_path / "out.mp4"), *QUICK]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}: 0.0 GB free, and the output needs about" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
