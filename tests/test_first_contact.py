"""A newcomer's first contact: the Quick start on a fresh, busy machine, and errors that name the cure.

The demo test runs `bash scripts/demo.sh` exactly as the README says, in a fresh `git clone`
of the repository's committed HEAD, with a brand-new PREFECT_HOME, no PREFECT_API_URL, and
both cores kept busy by two CPU-bound processes, as on a shared CI machine.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from prefect_comet import OmniVideoRequest, generate_video, generate_videos
from prefect_comet._files import filesystem_for, open_url
from prefect_comet.exceptions import StorageError
from prefect_comet.steps.storage_errors import ensure_writable
from tests.conftest import FAST

ROOT = Path(__file__).resolve().parents[1]
DEMO_SECONDS = 480  # the demo allows Prefect's temporary server 180 s to start; the rest is slack
MARK = "PREFECT_COMET_FIRST_CONTACT"  # every process the demo test starts carries it


# -- the Quick start on a fresh, busy machine ----------------------------------------------


def _stop_marked(mark: str) -> list[str]:
    """Kill every live process whose environment carries `MARK=mark`; what was still running."""
    stopped = []
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and process.environ().get(MARK) == mark:
                stopped.append(" ".join(process.cmdline())[:120])
                process.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return stopped


@pytest.fixture
def busy_machine() -> Iterator[dict[str, str]]:
    """Two CPU-bound processes, one per core of the 2-core CI machine; the environment marking them.

    Every process started under the yielded environment (the burners, the demo, Prefect's
    temporary server it starts) carries a mark of this test, and all are killed at teardown,
    pass or fail.
    """
    mark = uuid.uuid4().hex
    env = {name: value for name, value in os.environ.items() if not name.startswith(("PREFECT_", "COMETAPI_"))}
    env[MARK] = mark
    burners = [
        subprocess.Popen(
            [sys.executable, "-c", "while True: pass"], env=env, stdin=subprocess.DEVNULL, start_new_session=True
        )
        for _ in range(2)
    ]
    try:
        yield env
    finally:
        for burner in burners:
            burner.kill()
            burner.wait(timeout=10)
        _stop_marked(mark)


def _fresh_clone(tmp_path: Path) -> Path:
    """A `git clone` of the committed HEAD whose `.venv` borrows the installed packages.

    `scripts/_venv.sh` skips `pip install` when `.venv` holds the stamp of the clone's
    pyproject.toml and constraints.txt, so a multi-minute install is avoided: the clone's `.venv`
    is a folder of its own holding links to the running environment's `bin`, `lib`, ... and
    that stamp (computed by _venv.sh's own line). The folder is the clone's, so nothing the
    script might do to it can touch the environment running this test. The editable install
    points at this checkout; PYTHONPATH (set by the test) makes the clone's own code run.
    """
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    venv = clone / ".venv"
    venv.mkdir()
    for entry in Path(sys.prefix).iterdir():
        if not entry.name.startswith(".installed-"):
            (venv / entry.name).symlink_to(entry)
    [stamp_line] = [line for line in (clone / "scripts" / "_venv.sh").read_text().splitlines() if line.startswith("stamp=")]
    stamp = subprocess.run(
        ["bash", "-c", f"set -euo pipefail; {stamp_line}; echo \"$stamp\""],
        cwd=clone, check=True, capture_output=True, text=True,
    ).stdout.strip()
    assert stamp.startswith(".venv/.installed-"), stamp
    (clone / stamp).touch()
    return clone


@pytest.mark.timeout(DEMO_SECONDS + 120)
def test_the_quick_start_demo_works_in_a_fresh_clone_on_a_busy_machine(tmp_path, busy_machine):
    if sys.prefix == sys.base_prefix:
        pytest.skip("the tests do not run in a virtual environment to lend the clone")
    clone = _fresh_clone(tmp_path)
    env = {**busy_machine, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PYTHONPATH": str(clone)}
    started = time.monotonic()
    demo = subprocess.Popen(
        ["bash", "scripts/demo.sh"], cwd=clone, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        output, _ = demo.communicate(timeout=DEMO_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGKILL)
        output, _ = demo.communicate()
        pytest.fail(f"the demo did not finish within {DEMO_SECONDS} s:\n{output[-4000:]}")
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    elapsed = time.monotonic() - started

    assert demo.returncode == 0, f"the demo failed ({demo.returncode}) after {elapsed:.0f} s:\n{output[-4000:]}"
    found = re.search(r"^Stored video: (\S+\.mp4)$", output, re.M)
    assert found, output[-4000:]
    video = Path(found.group(1))
    video = video if video.is_absolute() else clone / video
    assert video.is_file() and video.resolve().is_relative_to(clone / "videos"), (video, output[-2000:])
    data = video.read_bytes()
    assert data[4:8] == b"ftyp" and f"sha256 {hashlib.sha256(data).hexdigest()}" in output
    print(f"demo on a busy machine: {elapsed:.0f} s")


# -- a storage package that is not installed ------------------------------------------------


@pytest.fixture
def without_s3fs(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if s3fs were not installed: its import fails and fsspec forgets the class it loaded."""
    monkeypatch.setitem(sys.modules, "s3fs", None)
    registry = sys.modules["fsspec.registry"]._registry
    for protocol in ("s3", "s3a"):
        if protocol in registry:
            monkeypatch.delitem(registry, protocol)


CURES = [
    ("s3://my-bucket/videos?X-Amz-Signature=secret", "s3fs", 'pip install "prefect-comet[s3]"'),
    ("simplecache::s3://my-bucket/videos", "s3fs", 'pip install "prefect-comet[s3]"'),
    ("gs://my-bucket/videos", "gcsfs", 'pip install "prefect-comet[gcs]"'),
    ("az://container/videos", "adlfs", 'pip install "prefect-comet[azure]"'),
    ("abfs://container/videos", "adlfs", 'pip install "prefect-comet[azure]"'),
]


@pytest.fixture
def without_storage_packages(without_s3fs, monkeypatch: pytest.MonkeyPatch) -> None:
    """No s3fs, gcsfs or adlfs, whether or not this environment has them."""
    registry = sys.modules["fsspec.registry"]._registry
    for package, protocols in (("gcsfs", ("gs", "gcs")), ("adlfs", ("az", "abfs", "abfss"))):
        monkeypatch.setitem(sys.modules, package, None)
        for protocol in protocols:
            if protocol in registry:
                monkeypatch.delitem(registry, protocol)


@pytest.mark.parametrize(("url", "package", "cure"), CURES, ids=[c[0].split("://")[0] for c in CURES])
def test_a_missing_storage_package_is_named_with_its_extra(without_storage_packages, url, package, cure):
    for reach in (filesystem_for, open_url, ensure_writable):
        with pytest.raises(ImportError) as raised:
            reach(url)
        message = str(raised.value)
        assert cure in message and package in message and "\n" not in message, message
        assert "secret" not in message and raised.value.name == package


async def test_an_s3_destination_without_s3fs_fails_before_any_request(without_s3fs, emulator, credentials):
    with pytest.raises(ImportError, match=re.escape('pip install "prefect-comet[s3]"')) as raised:
        await generate_video(
            OmniVideoRequest(prompt="x"), destination="s3://my-bucket/videos", credentials=credentials, **FAST
        )
    assert "\n" not in str(raised.value)
    assert emulator.requests == []


async def test_an_s3_ledger_without_s3fs_fails_before_any_request(without_s3fs, emulator, credentials, tmp_path):
    with pytest.raises(ImportError, match=re.escape('pip install "prefect-comet[s3]"')):
        await generate_video(
            OmniVideoRequest(prompt="x"), destination=str(tmp_path), ledger_uri="s3://my-bucket/ledger",
            credentials=credentials, **FAST,
        )
    assert emulator.requests == []


async def test_a_batch_file_on_s3_without_s3fs_names_the_extra(without_s3fs, emulator, credentials, tmp_path):
    with pytest.raises(ImportError, match=re.escape('pip install "prefect-comet[s3]"')):
        await generate_videos("s3://my-bucket/prompts.jsonl", destination=str(tmp_path), credentials=credentials)
    assert emulator.requests == []


def test_other_import_errors_are_left_as_fsspec_words_them(monkeypatch: pytest.MonkeyPatch):
    # A protocol no extra of ours serves keeps fsspec's own words ("Install ocifs to ...").
    monkeypatch.setitem(sys.modules, "ocifs", None)
    with pytest.raises(ImportError, match="ocifs") as raised:
        filesystem_for("oci://bucket@namespace/videos")
    assert "prefect-comet[" not in str(raised.value)


# -- a destination that cannot be written ---------------------------------------------------


async def test_an_unwritable_destination_fails_the_flow_with_one_line_before_paying(emulator, credentials, tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    destination = tmp_path / "notes.txt" / "videos"

    with pytest.raises(StorageError) as raised:
        await generate_video(OmniVideoRequest(prompt="x"), destination=str(destination), credentials=credentials, **FAST)

    message = str(raised.value)
    assert str(destination) in message and "is a file, not a folder" in message and "What to do:" in message
    assert "\n" not in message
    assert emulator.requests == []


def test_a_destination_name_with_a_line_break_is_shown_on_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    with pytest.raises(StorageError) as raised:
        ensure_writable(str(tmp_path / "notes.txt" / "odd\nname"))
    assert "odd\\nname" in str(raised.value) and "\n" not in str(raised.value)
