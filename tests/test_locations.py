"""Shards over HTTP and through pipe: commands, served by a local server the tests start."""

import functools
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FAST, TINY

from data_prep.cli import main as prep_main
from data_prep.locations import LocationError, beside, join, open_url, read_url
from data_prep.schema import iterate_clips
from data_prep.verify import verify
from train.cli import main as train_main
from train.data import DataConfig, training_stream

PATTERN = "train-{000000..000003}.tar"


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; ``/cut/NAME`` sends NAME's full Content-Length but half its bytes."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if not self.path.startswith("/cut/"):
            return super().do_GET()
        data = (Path(self.directory) / self.path.removeprefix("/cut/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.close_connection = True


@pytest.fixture(scope="module")
def server(pretrain_shards):
    """The shards' folder at http://127.0.0.1:PORT/ for the module's tests."""
    handler = functools.partial(_Handler, directory=str(pretrain_shards))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def _free_port() -> int:
    """A port nothing listens on: bound, then released."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _clips(urls: str) -> list[tuple[str, np.ndarray]]:
    return [(clip.key, clip.frames) for clip in iterate_clips(urls)]


def test_http_and_pipe_shards_hold_the_same_clips_and_items_as_local_files(pretrain_shards, server):
    local = _clips(f"{pretrain_shards}/{PATTERN}")
    assert len(local) == 4
    for remote in (server + PATTERN, f"pipe:cat {pretrain_shards}/{PATTERN}"):
        clips = _clips(remote)
        assert [key for key, _ in clips] == [key for key, _ in local]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(clips, local, strict=True))

    def items(shards: str) -> list[dict]:
        config = DataConfig(shards=shards, size=(32, 56), shuffle_buffer=4)
        return list(training_stream(config, resampled=False))

    here, there = items(f"{pretrain_shards}/{PATTERN}"), items(server + PATTERN)
    assert len(here) == len(there) == 16  # 4 clips x 4 items, in the same seeded order
    for a, b in zip(here, there, strict=True):
        assert a["shard"].rsplit("/", 1)[1] == b["shard"].rsplit("/", 1)[1]
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a if k != "shard"), a["shard"]


def test_training_on_http_shards_with_pipe_validation_repeats_the_local_losses(
    pretrain_shards, server, tmp_path
):
    def run(name: str, train: str, validation: str) -> list[float]:
        run_dir = tmp_path / name
        common = ["--config", str(TINY), *FAST, "max_steps=3", "logging.tracker=none", "validation.every=3"]
        assert (
            train_main(
                [*common, f"run_dir={run_dir}", f"data.shards={train}", f"validation.shards={validation}"]
            )
            == 0
        )
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [r["train/total"] for r in rows if "train/total" in r] + [
            r["val/loss"] for r in rows if "val/loss" in r
        ]

    torch.manual_seed(0)
    local = run("local", f"{pretrain_shards}/{PATTERN}", f"{pretrain_shards}/train-000000.tar")
    torch.manual_seed(0)
    remote = run("remote", server + PATTERN, f"pipe:cat {pretrain_shards}/train-000000.tar")
    assert len(local) == 5 and remote == local  # 3 steps, validation at 0 and 3
    manifest = json.loads((tmp_path / "remote" / "data_manifest.json").read_text())
    assert manifest["totals"]["clips"] == 4  # read from beside the shards, over HTTP


def test_verify_reads_a_dataset_over_http_and_through_a_pipe(pretrain_shards, server, tmp_path):
    over_http = verify(server, every=1, sheets=tmp_path / "http")
    through_pipe = verify(f"pipe:cat {pretrain_shards}/{{name}}", every=100, sheets=tmp_path / "pipe")
    local = verify(pretrain_shards, every=100, sheets=tmp_path / "local")
    assert over_http["clips"] == through_pipe["clips"] == local["clips"] == 4
    assert over_http["reprojection_error"] == pytest.approx(local["reprojection_error"])
    assert len(list((tmp_path / "http").glob("contact-*.png"))) == 4


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("missing", "HTTP 404 File not found"),
        ("refused", "connection refused"),
        ("cut", "download truncated at"),
        ("failing pipe", "the command exited with status 3: no such bucket"),
    ],
)
def test_an_unreadable_location_is_one_clear_error_naming_it(
    pretrain_shards, server, tmp_path, capsys, where, message
):
    url = {
        "missing": server + "train-000009.tar",
        "refused": f"http://127.0.0.1:{_free_port()}/train-000000.tar",
        "cut": server + "cut/train-000000.tar",
        "failing pipe": "pipe:sh -c 'echo no such bucket >&2; exit 3' train-000000.tar",
    }[where]
    with pytest.raises(LocationError, match="download truncated" if where == "cut" else message) as caught:
        list(iterate_clips([url]))
    assert str(caught.value).startswith(url)

    run = ["--config", str(TINY), *FAST, "max_steps=1", f"run_dir={tmp_path / 'run'}", f"data.shards={url}"]
    assert train_main(run) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"gavs-train: error: {url}") and message in error and len(error.splitlines()) == 1

    folder = {
        "missing": server + "nowhere/",
        "cut": server + "cut/",
        "failing pipe": url.replace(".tar", "{name}"),
    }
    if where in folder:
        assert prep_main(["verify", folder[where], "--sheets", str(tmp_path / "sheets")]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("gavs-prep: error: ") and len(error.splitlines()) == 1
        assert ("HTTP 404" if where == "missing" else message) in error


def test_locations_beside_and_within_a_dataset_folder():
    assert beside("http://host/data/train-000001.tar", "manifest.json") == "http://host/data/manifest.json"
    assert beside("/data/train-000001.tar", "manifest.json") == "/data/manifest.json"
    shard = "pipe:aws s3 cp s3://bucket/gavs/train-000001.tar -"
    assert beside(shard, "manifest.json") == "pipe:aws s3 cp s3://bucket/gavs/manifest.json -"
    assert beside("pipe:make-shard 1", "manifest.json") is None
    assert join("http://host/data", "manifest.json") == "http://host/data/manifest.json"
    assert (
        join("pipe:gcloud storage cat gs://b/gavs/{name}", "x.tar")
        == "pipe:gcloud storage cat gs://b/gavs/x.tar"
    )
    with pytest.raises(LocationError, match=r"needs \{name\}"):
        join("pipe:cat /data/manifest.json", "x.tar")
    with pytest.raises(LocationError, match="s3:// is not read directly; use its own tool through pipe:"):
        open_url("s3://bucket/train-000000.tar")
    with pytest.raises(LocationError, match="No such file"):
        read_url("/nowhere/manifest.json")
