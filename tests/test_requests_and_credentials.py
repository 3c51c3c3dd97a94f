"""Bad input fails before any request leaves the machine; credentials never leak."""

from __future__ import annotations

import warnings

import pytest
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import SecretStr, ValidationError

from prefect_comet import CometAPICredentials, OmniVideoRequest, generate_video
from prefect_comet.exceptions import MissingAPIKeyError
from tests.conftest import API_KEY, FAST

INVALID_OMNI = [
    ({"prompt": "x", "aspect_ratio": "4:3"}, "aspect_ratio", "'16:9', '9:16' or '1:1'"),
    ({"prompt": "   "}, "prompt", "must not be empty"),
    ({"prompt": "x", "size": "1280x720"}, "size", "Extra inputs are not permitted"),
    ({"prompt": "x", "seconds": "0"}, "seconds", "must be a positive whole number of seconds"),
    ({"prompt": "x", "seconds": "four"}, "seconds", "must be a positive whole number of seconds"),
    ({"prompt": "x", "resolution": "4k"}, "resolution", "must be a frame height in pixels followed by 'p'"),
    ({"prompt": "x", "seconds": -4}, "seconds", "must be a positive whole number of seconds"),
    ({"prompt": "x", "seconds": "4.5"}, "seconds", "must be a positive whole number of seconds"),
    ({"prompt": "x", "seconds": "61"}, "seconds", "must be at most 60"),
    ({"prompt": "x", "resolution": "720"}, "resolution", "followed by 'p', like '720p'"),
    ({"prompt": "x", "model": "sora-2"}, "model", "'omni-fast'"),
    ({}, "prompt", "Field required"),
]


@pytest.mark.parametrize(("fields", "field", "rule"), INVALID_OMNI, ids=[c[1] + ":" + c[2][:12] for c in INVALID_OMNI])
def test_invalid_omni_requests_name_the_field_and_rule(fields, field, rule):
    with pytest.raises(ValidationError) as caught:
        OmniVideoRequest(**fields)
    assert field in str(caught.value) and rule in str(caught.value)


@pytest.mark.parametrize(("fields", "field", "rule"), INVALID_OMNI[:4])
async def test_invalid_flow_parameters_never_reach_the_server(emulator, credentials, fields, field, rule):
    with pytest.raises(Exception) as caught:
        await generate_video(request=fields, destination="memory://never", credentials=credentials, **FAST)
    assert field in str(caught.value)
    assert emulator.requests == []


def test_seconds_accepts_an_integer_as_its_string():
    assert OmniVideoRequest(prompt="x", seconds=8).seconds == "8"


@pytest.mark.parametrize(("seconds", "resolution"), [("4", "720p"), ("8", "1080p"), (12, "720p")])
def test_documented_values_pass_without_a_warning(seconds, resolution):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OmniVideoRequest(prompt="x", seconds=seconds, resolution=resolution)


@pytest.mark.parametrize(
    ("fields", "sent", "warned"),
    [
        ({"seconds": "20"}, {"seconds": "20"}, "seconds='20': the API docs show only 4, 8, 12"),
        ({"seconds": 6}, {"seconds": "6"}, "seconds='6'"),
        ({"seconds": "08"}, {"seconds": "8"}, None),  # the same length, written as the API shows it
        ({"seconds": "60"}, {"seconds": "60"}, "seconds='60'"),
        ({"resolution": "480p"}, {"resolution": "480p"}, "resolution='480p': the API docs show only 720p, 1080p"),
        ({"resolution": "1440p"}, {"resolution": "1440p"}, "resolution='1440p'"),
    ],
)
def test_free_string_values_the_docs_never_showed_are_sent_with_a_warning(fields, sent, warned):
    # The create page types seconds and resolution as free strings: refuse only what cannot be one.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        request = OmniVideoRequest(prompt="x", **fields)
    form = request.to_form()
    assert {name: form[name] for name in sent} == sent
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if warned is None:
        assert messages == []
    else:
        assert len(messages) == 1 and warned in messages[0], messages


async def test_an_undocumented_length_reaches_the_emulator_and_is_stored(emulator, credentials, tmp_path):
    with pytest.warns(UserWarning) as caught:
        request = OmniVideoRequest(prompt="x", seconds="6", resolution="480p")
    assert sorted(str(w.message).split(":")[0] for w in caught) == ["resolution='480p'", "seconds='6'"]
    stored = await generate_video(request, destination=str(tmp_path), credentials=credentials, **FAST)
    [job] = emulator.jobs.values()
    assert (job.request["seconds"], job.request["resolution"]) == ("6", "480p")
    assert abs(stored.duration_seconds - 6) <= 0.5


def test_credentials_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("COMETAPI_KEY", API_KEY)
    monkeypatch.setenv("COMETAPI_BASE_URL", "http://127.0.0.1:9")
    credentials = CometAPICredentials.from_env()
    assert credentials.api_key.get_secret_value() == API_KEY
    assert credentials.base_url == "http://127.0.0.1:9"


async def test_a_block_left_at_the_default_base_url_follows_comet_api_base_url(emulator, monkeypatch, caplog):
    # The demo and the README's emulator recipe point COMETAPI_BASE_URL at the emulator; a block
    # saved without base_url used to send the run to the real API regardless.
    from prefect_comet import credentials as module

    monkeypatch.setattr(module, "_told", set())
    monkeypatch.setenv("COMETAPI_BASE_URL", emulator.base_url)
    block = CometAPICredentials(api_key=SecretStr(API_KEY))
    assert block.base_url == module.DEFAULT_BASE_URL
    with caplog.at_level("WARNING"):
        async with block.get_client() as client:
            assert str(client.base_url).rstrip("/") == emulator.base_url
        async with block.get_client():
            pass
    [warning] = [r.getMessage() for r in caplog.records if r.name.endswith("prefect_comet.credentials")]
    assert f"COMETAPI_BASE_URL={emulator.base_url} is set" in warning and "unset COMETAPI_BASE_URL" in warning


def test_a_block_with_its_own_base_url_ignores_comet_api_base_url(monkeypatch):
    monkeypatch.setenv("COMETAPI_BASE_URL", "http://127.0.0.1:9")
    assert CometAPICredentials(api_key=SecretStr(API_KEY), base_url="http://proxy.test").effective_base_url() == (
        "http://proxy.test"
    )
    monkeypatch.delenv("COMETAPI_BASE_URL")
    assert CometAPICredentials(api_key=SecretStr(API_KEY)).effective_base_url() == "https://api.cometapi.com"


async def test_a_default_block_reaches_the_emulator_named_by_the_environment(emulator, monkeypatch, tmp_path):
    monkeypatch.setenv("COMETAPI_BASE_URL", emulator.base_url)
    monkeypatch.delenv("COMETAPI_KEY", raising=False)
    block = CometAPICredentials(api_key=SecretStr(API_KEY))  # no base_url: the default
    stored = await generate_video(
        OmniVideoRequest(prompt="x"), destination=str(tmp_path), credentials=block, **FAST
    )
    assert stored.task_id in emulator.jobs


def test_missing_key_names_both_ways_to_give_one(no_env_credentials):
    with pytest.raises(MissingAPIKeyError, match="COMETAPI_KEY") as caught:
        CometAPICredentials.from_env()
    assert "CometAPICredentials" in str(caught.value)


def test_empty_key_in_a_block_is_refused():
    with pytest.raises(MissingAPIKeyError):
        CometAPICredentials(api_key=SecretStr(" ")).get_client()


def test_reprs_hide_the_key():
    credentials = CometAPICredentials(api_key=SecretStr(API_KEY), base_url="http://x")
    assert API_KEY not in repr(credentials) and API_KEY not in str(credentials)
    assert API_KEY not in repr(credentials.get_client())


async def test_block_saves_and_loads_with_the_key_kept_secret():
    await CometAPICredentials(api_key=SecretStr(API_KEY)).save("test-block", overwrite=True)
    loaded = await CometAPICredentials.aload("test-block")
    assert loaded.api_key.get_secret_value() == API_KEY
    assert API_KEY not in loaded.model_dump_json()


class TestCometAPICredentialsBlock(BlockStandardTestSuite):
    @pytest.fixture
    def block(self):
        return CometAPICredentials

    @pytest.mark.skip(reason="downloads the logo from the internet, which tests never need")
    def test_has_a_valid_image(self, block):
        pass


async def test_block_registers_from_the_collection_with_its_description():
    import os
    import subprocess
    import sys

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "prefect_comet"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    async with get_client() as client:
        block_type = await client.read_block_type_by_slug("cometapi-credentials")
    assert block_type.name == "CometAPI Credentials"
    assert block_type.description == CometAPICredentials.get_description()


def _text_to_video_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "flows" / "text_to_video.py"
    spec = importlib.util.spec_from_file_location("text_to_video_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_text_to_video_pipeline_takes_what_the_request_takes(capsys):
    pipeline = _text_to_video_module()
    schema = pipeline.text_to_video.parameters.properties
    assert schema["seconds"]["type"] == "integer" and "enum" not in schema["resolution"]
    parameters = pipeline.text_to_video.validate_parameters({"seconds": "20", "resolution": "480p"})
    assert (parameters["seconds"], parameters["resolution"]) == (20, "480p")  # `-p seconds=20` or "20"

    for flag, value, rule in [("--seconds", "0", "positive whole number"), ("--resolution", "720", "followed by 'p'")]:
        with pytest.raises(SystemExit):
            pipeline.main([flag, value])
        assert rule in capsys.readouterr().err
