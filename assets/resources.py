"""Resources: the memgov workspace (local folder or S3) and the policy, configurable per deployment."""

from __future__ import annotations

import os
from functools import lru_cache

from dagster import ConfigurableResource

from pipelines.deployment.workspace import Workspace
from pipelines.governance.policy_in_force import policy_in_force
from policies import Policy

GPU_TAGS = {
    "memgov/gpu": "1",
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}},
        "pod_spec_config": {"node_selector": {"memgov.io/pool": "gpu"},
                            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    },
}


@lru_cache(maxsize=1)
def shared_embedder():
    """MiniLM loads once per process: every index refresh and RAG check reuses it."""
    from pipelines.data.rag import Embedder

    return Embedder()


class MemgovResource(ConfigurableResource):
    """Where state lives. Empty fields fall back to MEMGOV_HOME / MEMGOV_STORE / MEMGOV_POLICY / MEMGOV_REQUESTS_URL."""

    home: str = ""
    store_url: str = ""
    requests_url: str = ""
    policy: str = ""
    progress: bool = False

    def workspace(self) -> Workspace:
        return Workspace.open(self.home or None, self.store_url or None, self.requests_url or None)

    def load_policy(self) -> Policy:
        """The deployment's adopted policy; a `policy` field or MEMGOV_POLICY naming another one is refused."""
        return policy_in_force(self.workspace(), self.policy or os.environ.get("MEMGOV_POLICY") or None)

    def governed(self) -> tuple[Workspace, Policy]:
        """The deployment's own stores and policy, for the jobs that decide (approve, waive, roll back, forget).

        The Launchpad and GraphQL let a launcher rewrite a resource's config; for these jobs that would let the
        person deciding pick the rules, so any field that differs from the deployment's is refused by name."""
        expected = _DEPLOYED[0] if _DEPLOYED else deployment_resource()  # what this code location was built with
        changed = [name for name in GOVERNED_FIELDS if getattr(self, name) != getattr(expected, name)]
        if changed:
            raise LaunchOverrideRefused(
                f"governance jobs run on the deployment's own policy and stores; this launch sets "
                f"{', '.join(f'memgov.{name}' for name in changed)}: remove the resources block from the run config")
        return self.workspace(), self.load_policy()


GOVERNED_FIELDS = ("home", "store_url", "requests_url", "policy")


class LaunchOverrideRefused(ValueError):
    """A governance job launched with resource config that points it at another policy or store."""


def local_resource() -> MemgovResource:
    """The embedded default; MEMGOV_PROGRESS=1 shows the training, edit and unlearning progress bars."""
    return MemgovResource(progress=os.environ.get("MEMGOV_PROGRESS") == "1")


def s3_resource() -> MemgovResource:
    """Production variant: artifacts and the change-log mirror in S3, requests in Postgres (from the environment)."""
    return MemgovResource(store_url=os.environ.get("MEMGOV_STORE", ""), requests_url=os.environ.get("MEMGOV_REQUESTS_URL", ""))


_DEPLOYED: list[MemgovResource] = []  # the resource the definitions were built with (first call)


def deployment_resource() -> MemgovResource:
    """What this deployment's environment configures: S3 when MEMGOV_STORE names a bucket, else the local folder.
    The first one built is remembered: governed jobs compare a launch's resource with it."""
    resource = s3_resource() if os.environ.get("MEMGOV_STORE", "").startswith("s3://") else local_resource()
    if not _DEPLOYED:
        _DEPLOYED.append(resource)
    return resource
