"""Bad input fails before any request leaves the machine; credentials never leak."""

from __future__ import annotations

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
    ({"prompt": "x", "seconds": "5"}, "seconds", "'4', '8' or '12'"),
    ({"prompt": "x", "seconds": "four"}, "seconds", "'4', '8' or '12'"),
    ({"prompt": "x", "resolution": "4k"}, "resolution", "'720p' or '1080p'"),
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


def test_credentials_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("COMETAPI_KEY", API_KEY)
    monkeypatch.setenv("COMETAPI_BASE_URL", "http://127.0.0.1:9")
    credentials = CometAPICredentials.from_env()
    assert credentials.api_key.get_secret_value() == API_KEY
    assert credentials.base_url == "http://127.0.0.1:9"


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
