"""Where shards and manifests can be: a path, ``file://``, ``http(s)://`` or ``pipe:COMMAND``.

Every reader of shards (training, validation, ``gavs-prep verify``) opens them here, so a
failure says which URL and what went wrong: the HTTP status, a refused connection, a download
that ended before its ``Content-Length``, or the exit status and last error line of a pipe's
command. Object stores are read through ``pipe:`` and their own tools, for example
``pipe:aws s3 cp s3://bucket/gavs/train-000000.tar -`` or ``pipe:gcloud storage cat gs://...``.
Busy servers (HTTP 429 and 5xx) and timeouts are retried a few times; anything else fails at
once.
"""

from __future__ import annotations

import io
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

TIMEOUT_S = 60  # per connection attempt and per read
RETRIES = 3  # extra attempts after a busy server or a timeout, 1, 2 and 4 s apart


class LocationError(OSError):
    """A shard or manifest that cannot be read; the message names its URL."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # WebDataset appends its own context to ``args``; keep ours readable
        return self.message


def is_remote(url: str) -> bool:
    return url.startswith(("http://", "https://", "pipe:"))


def open_url(url: str) -> BinaryIO:
    """A binary stream of ``url``'s bytes; read errors also raise LocationError."""
    if url.startswith(("http://", "https://")):
        return io.BufferedReader(_Download(url, _request(url)), buffer_size=1 << 20)
    if url.startswith("pipe:"):
        return io.BufferedReader(_Pipe(url), buffer_size=1 << 20)
    if "://" in url and not url.startswith("file://"):
        scheme = url.split("://")[0]
        raise LocationError(
            f"{url}: {scheme}:// is not read directly; use its own tool through pipe:, "
            f"e.g. pipe:aws s3 cp {url} -"
        )
    path = Path(url.removeprefix("file://"))
    try:
        return path.open("rb")
    except OSError as err:
        raise LocationError(f"{url}: {err.strerror or err}") from err


def read_url(url: str) -> bytes:
    with open_url(url) as stream:
        return stream.read()


def beside(url: str, name: str) -> str | None:
    """The URL of the file ``name`` in the same folder as ``url`` (a shard's manifest); for a
    pipe, its command with the last ``.tar`` word's file name replaced; None without one."""
    if url.startswith(("http://", "https://")):
        return urllib.parse.urljoin(url, name)
    if url.startswith("pipe:"):
        words = url.split(" ")
        for index in reversed(range(len(words))):
            if words[index].endswith(".tar"):
                folder, _, _ = words[index].rpartition("/")
                words[index] = f"{folder}/{name}" if folder else name
                return " ".join(words)
        return None
    return str(Path(url.removeprefix("file://")).parent / name)


def join(folder: str, name: str) -> str:
    """The URL of ``name`` in a dataset folder given as a path, an ``http(s)://`` folder URL, or
    a ``pipe:`` command with ``{name}`` where the file name goes."""
    if folder.startswith(("http://", "https://")):
        return urllib.parse.urljoin(folder.rstrip("/") + "/", name)
    if folder.startswith("pipe:"):
        if "{name}" not in folder:
            raise LocationError(f"{folder}: a pipe: folder needs {{name}} where the file name goes")
        return folder.replace("{name}", name)
    return str(Path(folder.removeprefix("file://")) / name)


def shard_samples(urls: Iterable[dict]) -> Iterator[dict]:
    """WebDataset stage: shard URLs (``{"url": ...}``, as its shard lists give them) to raw
    samples carrying ``__url__``; exceptions propagate."""
    import webdataset as wds

    streams = ({**source, "stream": open_url(source["url"])} for source in urls)
    return wds.tariterators.group_by_keys(wds.tariterators.tar_file_expander(streams))


def _request(url: str):
    """The open HTTP response, after retrying a busy server or a timeout."""
    for attempt in range(RETRIES + 1):
        try:
            return urllib.request.urlopen(url, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as err:
            if err.code not in (429, 500, 502, 503, 504) or attempt == RETRIES:
                raise LocationError(f"{url}: HTTP {err.code} {err.reason}") from err
        except (urllib.error.URLError, TimeoutError) as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, ConnectionRefusedError):
                raise LocationError(f"{url}: connection refused (is the server running?)") from err
            if not isinstance(reason, TimeoutError) or attempt == RETRIES:
                raise LocationError(f"{url}: {reason}") from err
        time.sleep(2**attempt)
    raise AssertionError("unreachable")


class _Download(io.RawIOBase):
    """An HTTP response body that raises LocationError if it ends short of its Content-Length."""

    def __init__(self, url: str, response) -> None:
        self.url, self.response, self.received = url, response, 0
        self.expected = response.length  # None without a Content-Length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            count = self.response.readinto(buffer)
        except (OSError, TimeoutError) as err:
            raise LocationError(f"{self.url}: download failed after {self.received} bytes ({err})") from err
        self.received += count
        if count == 0 and len(buffer) and self.expected is not None and self.received < self.expected:
            raise LocationError(f"{self.url}: download truncated at {self.received} of {self.expected} bytes")
        return count

    def close(self) -> None:
        self.response.close()
        super().close()


class _Pipe(io.RawIOBase):
    """A shell command's standard output; at its end, a failed command raises LocationError
    with its exit status and last line of standard error."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.errors = tempfile.TemporaryFile()  # a file, not a pipe: a chatty command cannot block
        command = url.removeprefix("pipe:")
        self.process = subprocess.Popen(
            command, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.errors
        )

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self.process.stdout.readinto(buffer)
        if count == 0 and len(buffer) and self.process.wait():
            self.errors.seek(0)
            lines = self.errors.read().decode(errors="replace").strip().splitlines()
            said = f": {lines[-1]}" if lines else ""
            raise LocationError(f"{self.url}: the command exited with status {self.process.returncode}{said}")
        return count

    def close(self) -> None:
        if self.process.poll() is None:  # the reader stopped early
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.errors.close()
        super().close()
