"""Resume a suspended run whose jobs are done: one decision, used by the sweeper and the receiver."""

from __future__ import annotations

from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import SetStateStatus

from prefect_comet._logging import run_logger
from prefect_comet.suspension.waiting_list import WaitingList, read_waiting_lists

SUSPENDED = "Suspended"


async def suspended_runs(limit: int = 200) -> list[FlowRun]:
    """The flow runs now in the `Suspended` state (any flow; those without a waiting list are not ours).

    Args:
        limit: The most runs to read in one look.

    Returns:
        The runs, oldest first.
    """
    async with get_client() as client:
        return await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=[SUSPENDED]))),
            limit=limit,
        )


async def resume(flow_run_id: str) -> bool:
    """Ask the server to resume a suspended run.

    A run that is not suspended (yet, or any more) is refused by the server: that is not an
    error here, the sweeper looks again at its next round.

    Args:
        flow_run_id: The run.

    Returns:
        Whether the server accepted the resume.
    """
    async with get_client() as client:
        run = await client.read_flow_run(UUID(flow_run_id))
        if run.state is None or run.state.name != SUSPENDED:
            state = run.state.name if run.state else None
            run_logger().info("Flow run %s is not suspended (%s); not resumed.", flow_run_id, state)
            return False
        result = await client.resume_flow_run(UUID(flow_run_id))
    accepted = result.status == SetStateStatus.ACCEPT
    if accepted:
        run_logger().info("Resumed flow run %s: its jobs are done.", flow_run_id)
    else:
        run_logger().info("The server refused to resume flow run %s: %s", flow_run_id, result.details)
    return accepted


async def resume_if_ready(flow_run_id: str, done_task_ids: set[str]) -> bool:
    """Resume a suspended run when enough of the jobs on its waiting list are done.

    Args:
        flow_run_id: The run a callback named (checked against its own waiting list).
        done_task_ids: Task ids known (confirmed by the API) to be done.

    Returns:
        Whether the run was resumed.

    Example:
        ```python
        await resume_if_ready(run_id, {"task_1", "task_2"})
        ```
    """
    waiting: WaitingList | None = (await read_waiting_lists([flow_run_id])).get(flow_run_id)
    if waiting is None or not waiting.ready(done_task_ids):
        return False
    return await resume(flow_run_id)
