"""The flow `comet-sweeper`: resume suspended runs whose CometAPI jobs are done (deploy it every minute)."""

from __future__ import annotations

from prefect import flow

from prefect_comet.credentials import CometAPICredentials
from prefect_comet.suspension.sweep import SweepReport, sweep_once


@flow(name="comet-sweeper")
async def comet_sweeper(credentials_block: str | None = None, max_runs: int = 200) -> SweepReport:
    """Poll every job of every suspended `wait="suspend"` run once; resume the runs that are ready.

    The backstop of suspended waiting: callbacks can be lost and a resume sent before the
    run suspended is refused, so this runs on a schedule (one at a time) and costs one
    short process per sweep. Deploy it from `deployments/prefect.yaml`.

    Args:
        credentials_block: A saved CometAPI Credentials block for runs that used the
            environment's key; runs that used a saved block are polled with that block.
        max_runs: The most suspended runs looked at per sweep.

    Returns:
        What the sweep did: runs, jobs looked at, done, resumed.

    Example:
        ```python
        from prefect_comet import comet_sweeper

        report = await comet_sweeper(credentials_block="comet")
        ```
    """
    credentials = await CometAPICredentials.aload(credentials_block) if credentials_block else None
    return await sweep_once(credentials, max_runs=max_runs)
