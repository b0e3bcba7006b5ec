"""Reading what Prefect recorded: the task runs of the flow runs a test started."""
from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId


def task_runs(flow_run_id) -> list:
    """Every task run of `flow_run_id` and of its subflows (not the subflows' placeholders)."""
    with get_client(sync_client=True) as client:
        ids, frontier = {flow_run_id}, [flow_run_id]
        while frontier:
            children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)))
            frontier = [c.id for c in children]
            ids.update(frontier)
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(ids))))
    return [r for r in runs if not r.state or r.state.state_details.child_flow_run_id is None]
