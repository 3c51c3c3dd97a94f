"""The spending guard and the shared create rate limit, against the emulator's balance and prices."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from prefect_comet import CometAPICredentials, OmniVideoRequest, generate_video, generate_videos
from prefect_comet.exceptions import BudgetExceededError
from prefect_comet.testing.emulator import CometEmulator
from tests.conftest import API_KEY, FAST

PRICE = 0.25  # the emulator's price per job


def _credentials(emu: CometEmulator) -> CometAPICredentials:
    return CometAPICredentials(api_key=SecretStr(API_KEY), base_url=emu.base_url, query_base_url=emu.base_url)


def _requests(n: int) -> list[OmniVideoRequest]:
    return [OmniVideoRequest(prompt=f"kite {i}") for i in range(n)]


def _creates(emu: CometEmulator) -> list[float]:
    return sorted(r.time for r in emu.requests if r.route in ("omni.create", "kling.create"))


@pytest.mark.parametrize(
    ("balance", "max_spend", "named"),
    [(100.0, 2.0, r"\$2\.50, over max_spend_usd \$2\.00"), (1.0, 10.0, r"\$2\.50, over the account's balance \$1\.00")],
)
def test_a_batch_over_its_budget_or_the_balance_is_refused_before_any_create(tmp_path, balance, max_spend, named):
    with CometEmulator(api_key=API_KEY, latency=0.3, balance_usd=balance, price_per_job_usd=PRICE) as emu:
        with pytest.raises(BudgetExceededError, match=named):
            asyncio.run(
                generate_videos(
                    _requests(10), destination=str(tmp_path), credentials=_credentials(emu),
                    max_spend_usd=max_spend, price_per_job_usd=PRICE, **FAST,
                )
            )
        with pytest.raises(BudgetExceededError):
            asyncio.run(
                generate_video(
                    OmniVideoRequest(prompt="one kite"), destination=str(tmp_path), credentials=_credentials(emu),
                    max_spend_usd=min(max_spend, balance) / 100, price_per_job_usd=PRICE, **FAST,
                )
            )
        assert _creates(emu) == []  # 0 creates


def test_a_budget_that_covers_7_of_10_jobs_creates_7_and_skips_3(tmp_path):
    with CometEmulator(api_key=API_KEY, latency=0.3, balance_usd=100.0, price_per_job_usd=PRICE) as emu:
        result = asyncio.run(
            generate_videos(
                _requests(10), destination=str(tmp_path), credentials=_credentials(emu),
                max_spend_usd=7 * PRICE + 0.1, max_in_flight=5, batch_key="seven", allow_partial=True, **FAST,
            )
        )
        charged = emu.charged_usd
    assert len(_creates(emu)) == 7
    assert result.stored_count == 7 and result.skipped_count == 3 and result.failed_count == 0
    assert result.spent_usd == pytest.approx(charged) == pytest.approx(7 * PRICE)
    assert result.balance_before_usd == pytest.approx(100.0)
    assert result.balance_after_usd == pytest.approx(100.0 - 7 * PRICE)
    manifest = [json.loads(line) for line in Path(result.manifest_uri).read_text().splitlines()]
    skipped = [line for line in manifest if line["status"] == "skipped"]
    assert len(skipped) == 3 and all("max_spend_usd" in line["error"] for line in skipped)


def test_a_create_rate_limit_holds_across_two_concurrent_batches(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    name = f"comet-creates-{uuid.uuid4().hex[:8]}"
    decay = 1.0  # one slot back per second: at most 3 at once, then one a second

    async def both(emu: CometEmulator) -> None:
        async with get_client() as client:
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=3, slot_decay_per_second=decay)
            )
        await asyncio.gather(
            *(
                generate_videos(
                    _requests(6), destination=str(tmp_path / side), credentials=_credentials(emu),
                    batch_key=side, create_rate_limit=name, **FAST,
                )
                for side in ("left", "right")
            )
        )

    with CometEmulator(api_key=API_KEY, latency=0.3) as emu:
        asyncio.run(both(emu))
    creates = _creates(emu)
    assert len(creates) == 12
    seen = [round(t - creates[0], 2) for t in creates]
    # Never more than 3 at once, and one more per decayed slot: in any T seconds at most 3 + T.
    for window in (0.9, 3.0, 6.0):
        most = max(sum(start <= t < start + window for t in creates) for start in creates)
        assert most <= 3 + int(window * decay), (window, seen)
    assert creates[-1] - creates[0] >= 0.9 * (len(creates) - 3) / decay, seen  # the two batches shared it


def test_a_create_rate_limit_that_does_not_exist_is_refused_before_paying(emulator, credentials):
    with pytest.raises(ValueError, match="create_rate_limit: 'no-such-limit' must be a global concurrency limit"):
        asyncio.run(generate_videos(_requests(2), credentials=credentials, create_rate_limit="no-such-limit"))
    assert emulator.requests == []
