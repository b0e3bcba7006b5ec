"""The Prefect task runner the config asks for: threads in this process, or a Dask cluster
(a running one at `orchestration.dask_address`, else a local one) through prefect-dask."""
from __future__ import annotations

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from ant_config import AntConfig


def task_runner(config: AntConfig) -> TaskRunner:
    """Enter it (`with task_runner(config) as runner`) and `runner.submit(task, parameters)`."""
    cfg = config.orchestration
    if cfg.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=cfg.workers)
    from prefect_dask import DaskTaskRunner  # imports dask.distributed: only when asked for
    if cfg.dask_address:
        return DaskTaskRunner(address=cfg.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})
