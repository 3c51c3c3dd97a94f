"""The public surface is a contract: what `prefect_comet` exports, and what its errors carry."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import pickle
import pkgutil
import re
import tomllib
from pathlib import Path

import httpx
import pytest
import respx
from prefect.blocks.abstract import CredentialsBlock
from pydantic import SecretStr

import prefect_comet
from prefect_comet import CometAPICredentials, CometClient, OmniVideoRequest
from prefect_comet import exceptions as exc
from prefect_comet.api.kling_request import KlingOmniVideoRequest
from prefect_comet.api.omni import OmniProvider

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

# Every name `prefect_comet` exported before the package was laid out in folders (0.1.0).
EXPORTED_IN_0_1_0 = {
    "BatchResult", "JobOutcome", "generate_videos", "CometAPICredentials", "CometClient",
    "KlingElement", "KlingImage", "KlingOmniVideoRequest", "KlingShot", "KlingVideo",
    "KlingWatermark", "OmniVideoRequest", "RetryPolicy", "StoredVideo", "VideoJob",
    "VideoOutput", "VideoStatus", "create_video", "generate_video", "persist_video",
    "wait_for_video", "watch_progress",
}


def test_all_is_sorted_and_is_exactly_what_the_package_exports():
    public = {
        name
        for name, value in vars(prefect_comet).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert prefect_comet.__all__ == sorted(prefect_comet.__all__)
    assert set(prefect_comet.__all__) == public | {"__version__"}


def test_every_name_exported_before_stays_importable():
    assert EXPORTED_IN_0_1_0 <= set(prefect_comet.__all__)


def test_version_is_the_packages_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" in project["dynamic"]  # read from prefect_comet.__version__ by hatch
    assert re.fullmatch(r"\d+\.\d+\.\d+", prefect_comet.__version__)
    assert importlib.metadata.version("prefect-comet") == prefect_comet.__version__


def test_every_import_in_the_readme_works():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    imports = [
        node
        for block in blocks
        for node in ast.parse(block).body
        if isinstance(node, (ast.Import, ast.ImportFrom)) and "prefect_comet" in ast.unparse(node)
    ]
    assert len(imports) >= 5
    for node in imports:
        exec(compile(ast.Module(body=[node], type_ignores=[]), "README.md", "exec"), {})


def test_every_error_class_lives_in_exceptions_and_in_its_tree():
    tree = exc.__doc__ or ""
    errors = {
        name for name, value in vars(exc).items() if inspect.isclass(value) and issubclass(value, Exception)
    }
    drawn = set(re.findall(r"^(?:[│ ]*[├└]── )?([A-Za-z]+Error)\b", tree, re.M))
    assert errors == drawn, "the tree at the top of exceptions.py names every error class, and only those"
    for module in _package_modules():
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, Exception) and value.__module__ == module.__name__:
                # Private control-flow exceptions never reach a caller; public ones live in one place.
                assert name.startswith("_") or module is exc, f"{module.__name__}.{name} belongs in exceptions.py"


async def test_the_credentials_block_is_a_credentials_block_that_registers():
    from prefect.client.orchestration import get_client

    assert issubclass(CometAPICredentials, CredentialsBlock)
    await CometAPICredentials.register_type_and_schema()  # what `prefect block register` does
    async with get_client() as client:
        block_type = await client.read_block_type_by_slug("cometapi-credentials")
    assert block_type.name == "CometAPI Credentials"


async def test_borrowers_on_one_loop_share_one_client_until_the_last_is_done():
    credentials = CometAPICredentials(api_key=SecretStr("sk-pool"), base_url="https://api.test")
    async with credentials.get_client() as first, credentials.get_client() as second:
        assert isinstance(first, CometClient) and first is second
    async with credentials.get_client() as third:
        assert third is not first  # the pool closed with its last borrower; a new one opens
    assert first._http.is_closed


@respx.mock
async def test_errors_carry_status_code_kling_code_and_request_id():
    respx.post("https://api.test/kling/v1/videos/omni-video").mock(
        return_value=httpx.Response(
            400, json={"code": 1201, "message": "duration is invalid", "request_id": "req-77"}
        )
    )
    respx.post("https://api.test/v1/videos").mock(
        return_value=httpx.Response(
            401, json={"error": {"message": "bad key", "type": "comet_api_error"}}, headers={"x-request-id": "gw-9"}
        )
    )
    async with CometClient("https://api.test", "sk-x") as client:
        with pytest.raises(exc.BadRequestError) as kling:
            await client.create("/kling/v1/videos/omni-video", json={"prompt": "p"})
        with pytest.raises(exc.AuthenticationError) as omni:
            await OmniProvider().create(client, OmniVideoRequest(prompt="p"), idempotency_key="k")

    assert (kling.value.status_code, kling.value.code, kling.value.request_id) == (400, 1201, "req-77")
    assert (omni.value.status_code, omni.value.code, omni.value.request_id) == (401, None, "gw-9")
    revived = pickle.loads(pickle.dumps(kling.value))  # Prefect pickles a failed task's exception
    assert (revived.status_code, revived.code, revived.request_id, str(revived)) == (
        400, 1201, "req-77", str(kling.value)
    )


def test_a_kling_request_and_an_omni_request_sit_side_by_side():
    assert OmniVideoRequest.__module__ == "prefect_comet.api.omni_request"
    assert KlingOmniVideoRequest.__module__ == "prefect_comet.api.kling_request"


def _package_modules() -> list[object]:
    return [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(prefect_comet.__path__, "prefect_comet.")
        if ".testing." not in info.name and not info.name.endswith("__main__")
    ]
