"""The spending guard: estimate a run's cost before the first create, and stop creating at the budget.

No price API is documented, so prices are what the user says (`price_per_job_usd`: one
number, or a mapping by model / mode / duration). What was really spent is read from the
account's balance when the query service answers (its fall since the run started), and is
the sum of the prices otherwise. Jobs are admitted one at a time, so a batch never starts a
job the budget cannot cover.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from prefect_comet._logging import run_logger
from prefect_comet.api.families import VideoRequest
from prefect_comet.exceptions import BudgetExceededError

PricePerJob = float | dict[str, float]
BalanceReader = Callable[[], Awaitable[float | None]]


def price_of(request: VideoRequest, prices: PricePerJob | None) -> float | None:
    """A job's price in USD: the most specific of `model/mode/duration`, `model/mode`, `model`, `*`.

    Args:
        request: The request.
        prices: One price for every job, or prices by key, e.g.
            `{"kling-v3-omni/pro/10": 1.4, "kling-v3-omni": 0.7, "*": 0.5}`.

    Returns:
        The price, or None when no price applies.

    Example:
        ```python
        price_of(OmniVideoRequest(prompt="a kite", seconds="8"), {"omni-fast/8": 0.4})  # 0.4
        ```
    """
    if prices is None or isinstance(prices, int | float):
        return None if prices is None else float(prices)
    model = str(getattr(request, "model_name", None) or getattr(request, "model", None) or "")
    mode = str(getattr(request, "mode", None) or "")
    duration = str(getattr(request, "duration", None) or getattr(request, "seconds", None) or "")
    for key in (f"{model}/{mode}/{duration}", f"{model}/{duration}", f"{model}/{mode}", model, "*"):
        if key in prices:
            return float(prices[key])
    return None


class Budget:
    """What a run may spend, and what it has spent.

    Args:
        max_spend_usd: The most the run may spend (None: no cap, only the balance counts).
        prices: The price of each job (see `price_of`).
        read_balance: Reads the account's balance in USD (None: unlimited or unknown).

    Example:
        ```python
        budget = Budget(5.0, 0.5, read_balance)
        await budget.check_estimate(requests)
        async with budget.admitted(request):
            ...  # the paid create
        ```
    """

    def __init__(self, max_spend_usd: float | None, prices: PricePerJob | None, read_balance: BalanceReader) -> None:
        self.max_spend_usd = max_spend_usd
        self.prices = prices
        self._read_balance = read_balance
        self.balance_before_usd: float | None = None
        self.balance_after_usd: float | None = None
        self._admitted_usd = 0.0
        self._learned_price: float | None = None
        self._lock = asyncio.Lock()

    async def check_estimate(self, requests: Sequence[VideoRequest]) -> None:
        """Refuse a run whose estimate exceeds the budget or the balance, before anything is paid.

        Raises:
            BudgetExceededError: Naming the estimate and the budget (or the balance).
        """
        self.balance_before_usd = await self._balance()
        prices = [price_of(request, self.prices) for request in requests]
        known = [price for price in prices if price is not None]
        estimate = sum(known)
        unpriced = len(prices) - len(known)
        if unpriced:
            run_logger().info("No price given for %s of %s jobs: the budget counts what the balance says.",
                              unpriced, len(prices))
        if self.max_spend_usd is not None and estimate > self.max_spend_usd:
            raise BudgetExceededError(
                f"The estimate for {len(prices)} jobs is ${estimate:.2f}, over max_spend_usd "
                f"${self.max_spend_usd:.2f}. What to do: raise max_spend_usd or send fewer jobs; nothing was created."
            )
        if self.balance_before_usd is not None and estimate > self.balance_before_usd:
            raise BudgetExceededError(
                f"The estimate for {len(prices)} jobs is ${estimate:.2f}, over the account's balance "
                f"${self.balance_before_usd:.2f}. What to do: top the account up or send fewer jobs; "
                "nothing was created."
            )

    @asynccontextmanager
    async def admitted(self, request: VideoRequest) -> AsyncIterator[None]:
        """Hold the budget for one paid create; refuse it when the budget cannot cover it.

        Raises:
            BudgetExceededError: The spend would pass the budget (the job is skipped, not paid).
        """
        if self.max_spend_usd is None:
            yield
            return
        async with self._lock:  # one create at a time: the next one knows what this one cost
            price = price_of(request, self.prices) or self._learned_price or 0.0
            spent = await self.spent_usd()
            if spent + price > self.max_spend_usd + 1e-9 or (spent >= self.max_spend_usd and price == 0.0):
                raise BudgetExceededError(
                    f"Skipped: ${spent:.2f} spent of max_spend_usd ${self.max_spend_usd:.2f}, and this job "
                    f"costs ${price:.2f}. What to do: raise max_spend_usd and run the batch again with the "
                    "same batch_key."
                )
            before = self.balance_after_usd
            yield
            self._admitted_usd += price
            after = await self._balance()
            if before is not None and after is not None and before > after and price_of(request, self.prices) is None:
                self._learned_price = before - after  # what this kind of job really costs

    async def spent_usd(self) -> float:
        """What the run has spent: the balance's fall when it is known, else the sum of the prices."""
        balance = await self._balance()
        if balance is not None and self.balance_before_usd is not None:
            return max(self.balance_before_usd - balance, 0.0)
        return self._admitted_usd

    async def _balance(self) -> float | None:
        try:
            balance = await self._read_balance()
        except Exception as error:  # a budget without the balance still counts the prices
            run_logger().warning("Could not read the account's balance (%s); counting prices only.", error)
            balance = None
        self.balance_after_usd = balance
        return balance
