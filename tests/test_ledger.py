"""The job ledger: exclusive claims per storage, damage reported with path and key, never a second create."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import pytest

from prefect_comet import OmniVideoRequest, generate_video
from prefect_comet.exceptions import LedgerDamagedError
from prefect_comet.steps.ledger import JobLedger, LedgerRecord
from tests.conftest import FAST


def _record(key: str) -> LedgerRecord:
    return LedgerRecord(key=key, provider="omni", request_sha256="0" * 64, state="creating")


@pytest.fixture(params=["local", "memory", "s3"])
def ledger_uri(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "ledger")
    if request.param == "memory":
        return f"memory://ledger-{uuid.uuid4().hex}"
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/ledger"


def test_a_key_is_claimed_once_until_it_is_forgotten(ledger_uri):
    ledger, other = JobLedger(ledger_uri), JobLedger(ledger_uri)  # two runs, one storage

    assert ledger.exclusive
    assert ledger.claim(_record("k1")) is True
    assert other.claim(_record("k1")) is False  # the second claim of a key loses
    assert other.get("k1").state == "creating"
    other.forget("k1")  # a refused create frees the key
    assert other.claim(_record("k1")) is True


def test_an_unknown_backend_claims_without_exclusivity_and_says_so(caplog, monkeypatch):
    from prefect_comet.steps import ledger as ledger_module

    monkeypatch.setattr(ledger_module, "_EXCLUSIVE_PROTOCOLS", set())  # memory:// as any unknown backend
    ledger = JobLedger(f"memory://ledger-{uuid.uuid4().hex}")
    with caplog.at_level("WARNING"):
        assert ledger.exclusive is False
        assert ledger.claim(_record("k1")) is True
        assert ledger.claim(_record("k1")) is False
    assert "not known to be atomic" in caplog.text


@pytest.mark.parametrize(
    "content",
    [b"", b'{"key": "kite", "provider": "om', b"\x00\xffgarbage", b'["a", "list"]', b'{"key": "kite"}'],
    ids=["empty", "truncated", "garbage", "wrong-json", "missing-fields"],
)
async def test_a_damaged_record_names_its_file_and_key_and_nothing_is_sent(tmp_path, credentials, emulator, content):
    ledger = JobLedger.beside(str(tmp_path))
    path = Path(ledger._path("kite"))
    path.parent.mkdir(parents=True)
    path.write_bytes(content)

    with pytest.raises(LedgerDamagedError) as caught:
        await generate_video(
            OmniVideoRequest(prompt="A kite"), destination=str(tmp_path), credentials=credentials,
            idempotency_key="kite", **FAST,
        )

    assert caught.value.path == str(path) and caught.value.key == "kite"
    assert str(path) in str(caught.value) and "'kite'" in str(caught.value) and "sidecar" in str(caught.value)
    assert emulator.jobs == {}  # never a silent second create


async def test_a_record_of_another_key_is_damage_too(tmp_path):
    ledger = JobLedger(str(tmp_path))
    ledger.claim(_record("kite"))
    Path(ledger._path("kite")).replace(ledger._path("boat"))

    with pytest.raises(LedgerDamagedError, match="another key, 'kite'"):
        ledger.get("boat")


async def test_a_stored_video_whose_record_is_damaged_is_found_through_its_sidecar(tmp_path, credentials, emulator):
    request = OmniVideoRequest(prompt="A kite over the dunes")
    first = await generate_video(
        request, destination=str(tmp_path), credentials=credentials, idempotency_key="dunes", **FAST
    )
    Path(JobLedger.beside(str(tmp_path))._path("dunes")).write_bytes(b'{"key": "dun')  # cut short

    again = await generate_video(
        request, destination=str(tmp_path), credentials=credentials, idempotency_key="dunes", **FAST
    )

    assert again.uri == first.uri and again.sha256 == first.sha256
    assert emulator.created_per_key() == {"dunes": 1}


def test_records_lists_every_readable_record_and_names_the_damaged_ones(ledger_uri):
    ledger = JobLedger(ledger_uri)
    assert list(ledger.records()) == []  # a ledger never written has none
    for key in ("k1", "k2"):
        ledger.put(_record(key))
    fs, root = fsspec.core.url_to_fs(ledger_uri)
    fs.pipe_file(f"{root}/broken.json", b"{not a record")
    fs.pipe_file(f"{root}/misfiled.json", _record("k3").model_dump_json().encode())  # k3's record, wrong name
    fs.pipe_file(f"{root}/{'0' * 40}.json.partial-0123456789ab", b"{half")  # a write under way

    skipped: list[str] = []
    keys = sorted(record.key for record in ledger.records(skipped=skipped))

    assert keys == ["k1", "k2"]
    assert sorted(uri.rsplit("/", 1)[-1] for uri in skipped) == ["broken.json", "misfiled.json"]
