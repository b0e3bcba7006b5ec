"""The pipeline's decisions in plain Python, between the entry points (the `ant` CLI, the
Prefect flows and tasks) and the rooms below them (`warehouse/`, `encoders/`, `ant_model/`).

Read top-down: `context` (a config and its warehouse, built once) → `modalities` (which item
features a model reads) → `planning` (what a training run trains, its version, its parent) →
`training` (pre-training and adaptation runs, registered) → `promotion` (which model serves a
target) → `features` (incremental item features) → `report` (the transfer report and charts) →
`recommend` (top-k lists, one user or all). Each entry point calls the same functions, so a
command run by hand and a task run by a flow do the same thing.
"""

import ant_config  # noqa: E402,F401 - before any torch import: it sets OpenMP's wait policy
