"""A create whose answer is lost: the job is found again (Kling) or reported, never paid twice."""

from __future__ import annotations

import pytest

from prefect_comet import KlingOmniVideoRequest, OmniVideoRequest, generate_video
from prefect_comet.exceptions import CreateOutcomeUnknownError
from tests._resilience import ledger_records, leftovers, uri_sha256
from tests.conftest import FAST

KLING = KlingOmniVideoRequest(prompt="A paper boat drifts at dawn", aspect_ratio="16:9")
OMNI = OmniVideoRequest(prompt="Ocean waves at golden hour")


async def _generate(request, credentials, destination, key, **kwargs):
    return await generate_video(
        request, destination=str(destination), credentials=credentials, idempotency_key=key, **FAST, **kwargs
    )


@pytest.mark.parametrize("fault", ["reset_after", "malformed_json"])
async def test_kling_lost_answer_is_found_by_external_task_id(emulator, credentials, tmp_path, fault):
    emulator.add_fault("kling.create", fault)  # the job is created, its answer lost or unreadable

    stored = await _generate(KLING, credentials, tmp_path, "boat-1")

    (task_id,) = emulator.jobs
    assert stored.task_id == task_id and stored.external_task_id == "boat-1"
    assert emulator.created_per_key() == {"boat-1": 1}
    assert [r.route for r in emulator.requests].count("kling.create") == 1  # never sent again
    assert stored.sha256 == emulator.sha256(task_id) == uri_sha256(stored.uri)
    assert [record["state"] for record in ledger_records(tmp_path)] == ["stored"]


async def test_kling_create_that_never_landed_is_recreated_only_when_asked(emulator, credentials, tmp_path):
    emulator.add_fault("kling.create", "http_502")  # answered 5xx: the job may or may not exist

    with pytest.raises(CreateOutcomeUnknownError, match="boat-2") as caught:
        await _generate(KLING, credentials, tmp_path, "boat-2")
    assert "may exist" in str(caught.value)
    assert emulator.jobs == {}  # the lookup by external_task_id found nothing; nothing resent

    stored = await _generate(KLING, credentials, tmp_path, "boat-2", if_outcome_unknown="recreate")

    assert emulator.created_per_key() == {"boat-2": 1}
    assert stored.sha256 == emulator.sha256(stored.task_id)


async def test_omni_lost_answer_raises_with_the_key_and_never_pays_twice(emulator, credentials, tmp_path):
    emulator.add_fault("omni.create", "reset_after")

    with pytest.raises(CreateOutcomeUnknownError) as caught:
        await _generate(OMNI, credentials, tmp_path, "waves-1")

    message = str(caught.value)
    assert "'waves-1'" in message and "may exist" in message and "recreate" in message
    assert "waves-1" in repr(caught.value)
    assert len(emulator.jobs) == 1 and emulator.created_per_key() == {"waves-1": 1}
    assert leftovers(tmp_path) == []
    assert [(r["key"], r["state"], r["task_id"]) for r in ledger_records(tmp_path)] == [
        ("waves-1", "unknown", None)  # the intent stays recorded: a re-run knows a create was sent
    ]

    for _ in range(2):  # running again, as a user would, does not create another job
        with pytest.raises(CreateOutcomeUnknownError, match="waves-1"):
            await _generate(OMNI, credentials, tmp_path, "waves-1")
    assert len(emulator.jobs) == 1 and emulator.created_per_key() == {"waves-1": 1}
    assert [r.route for r in emulator.requests].count("omni.create") == 1

    # Only the user's explicit choice sends it again (and may pay twice: here it does).
    stored = await _generate(OMNI, credentials, tmp_path, "waves-1", if_outcome_unknown="recreate")
    assert emulator.created_per_key() == {"waves-1": 2}
    assert stored.sha256 == emulator.sha256(stored.task_id) == uri_sha256(stored.uri)


@pytest.mark.parametrize("fault", ["http_500", "http_503", "reset_before"])
async def test_omni_create_that_never_landed_raises_then_recreates_once(emulator, credentials, tmp_path, fault):
    emulator.add_fault("omni.create", fault)

    with pytest.raises(CreateOutcomeUnknownError, match="waves-2"):
        await _generate(OMNI, credentials, tmp_path, "waves-2")
    assert emulator.jobs == {}

    stored = await _generate(OMNI, credentials, tmp_path, "waves-2", if_outcome_unknown="recreate")

    assert emulator.created_per_key() == {"waves-2": 1}
    assert stored.sha256 == emulator.sha256(stored.task_id)


async def test_omni_429_on_create_is_resent_safely(emulator, credentials, tmp_path):
    emulator.add_fault("omni.create", "http_429", times=2, retry_after=0)

    stored = await _generate(OMNI, credentials, tmp_path, "waves-3")

    assert [r.route for r in emulator.requests].count("omni.create") == 3
    assert emulator.created_per_key() == {"waves-3": 1}
    assert stored.sha256 == emulator.sha256(stored.task_id)


async def test_recreate_sends_once_even_when_its_own_answer_is_lost(emulator, credentials, tmp_path):
    emulator.add_fault("omni.create", "http_502")  # first run: nothing created, outcome unknown
    with pytest.raises(CreateOutcomeUnknownError):
        await _generate(OMNI, credentials, tmp_path, "waves-4")
    assert emulator.jobs == {}

    # The user checked: no job. They recreate; this create is taken but its answer is lost.
    emulator.add_fault("omni.create", "reset_after")
    with pytest.raises(CreateOutcomeUnknownError, match="waves-4"):
        await _generate(OMNI, credentials, tmp_path, "waves-4", if_outcome_unknown="recreate")
    assert emulator.created_per_key() == {"waves-4": 1}  # sent once, not resent blindly
