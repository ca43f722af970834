"""Where a run's steps execute, chosen by the deployment (MEMGOV_EXECUTOR), never by the person launching.

- unset / `in_process` (the embedded default): every step of a run in the run's own process, so that process
  holds the cycle lock from admission to release (pipelines/cycle/lock.py);
- `k8s` (production): `k8s_job_executor` from dagster-k8s (the `prod` extra) gives each step its own pod; the
  `dagster-k8s/config` op tags (assets.resources.GPU_TAGS) put training, edit and unlearning steps on GPU nodes
  and leave the others on CPU pods. One cycle at a time then comes from the run queue's tag limit on
  `memgov/cycle` (infra/dagster/dagster.postgres.yaml), since steps no longer share a process.
"""

from __future__ import annotations

import os

from dagster import ExecutorDefinition, in_process_executor

ENV = "MEMGOV_EXECUTOR"


def deployment_executor() -> ExecutorDefinition:
    choice = os.environ.get(ENV, "").strip() or "in_process"
    if choice == "in_process":
        return in_process_executor
    if choice == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError:
            raise RuntimeError(f"{ENV}=k8s needs dagster-k8s: install memgov with the `prod` extra "
                               "(pip install 'memgov[prod]')") from None
        return k8s_job_executor
    raise ValueError(f"{ENV}={choice!r} is not known; use in_process (default) or k8s")
