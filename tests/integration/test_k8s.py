"""The Kubernetes path as dagster-k8s builds it: with MEMGOV_EXECUTOR=k8s every job runs its steps with
`k8s_job_executor`, and the pod spec that dagster-k8s derives from a step's real op tags gives training, edit and
unlearning steps a GPU (request, node selector, toleration) and every other step none. The manifests (the step
jobs built here and the ConfigMap shipped in infra/k8s) validate against the Kubernetes schemas offline."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

dagster_k8s = pytest.importorskip("dagster_k8s", reason="the prod extra (dagster-k8s) is not installed")
ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30.0"
GPU_STEPS = ("candidate_update", "candidate_model", "process_forget_request")


def _op_tags() -> dict[str, dict]:
    from assets.definitions import defs

    return {node.name: dict(node.tags or {}) for job in defs.resolve_all_job_defs() for node in job.graph.node_defs}


def _step_job(step: str, tags: dict) -> dict:
    from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config
    from kubernetes.client import ApiClient

    config = DagsterK8sJobConfig(job_image="registry.example.internal/memgov:0.1.0", dagster_home="/opt/dagster",
                                 instance_config_map="dagster-instance", env_config_maps=["memgov-env"])
    job = construct_dagster_k8s_job(config, ["dagster", "api", "execute_step"], f"dagster-step-{step.replace('_', '-')}",
                                    user_defined_k8s_config=get_user_defined_k8s_config(tags),
                                    pod_name=f"dagster-step-{step.replace('_', '-')}")
    return ApiClient().sanitize_for_serialization(job)


def _validate(manifest: dict) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_every_job_runs_on_the_k8s_job_executor_when_the_deployment_says_so():
    code = ("from assets.definitions import defs; "
            "print(sorted({j.executor_def.name for j in defs.resolve_all_job_defs()}))")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "MEMGOV_EXECUTOR": "k8s"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "['k8s']"
    executor = importlib.import_module("dagster_k8s").k8s_job_executor
    assert executor.name == "k8s"


def test_gpu_steps_get_a_gpu_pod_and_cpu_steps_do_not():
    tags = _op_tags()
    for step in GPU_STEPS:
        job = _step_job(step, tags[step])
        _validate(job)
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1", step
        assert container["resources"]["requests"]["nvidia.com/gpu"] == "1", step
        assert pod["nodeSelector"] == {"memgov.io/pool": "gpu"}, step
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"], step
    for step in ("admitted_batch", "selected_samples", "candidate_index", "evaluation_card", "release"):
        job = _step_job(step, tags[step])
        _validate(job)
        pod = job["spec"]["template"]["spec"]
        resources = pod["containers"][0].get("resources") or {}
        assert "nvidia.com/gpu" not in {**(resources.get("limits") or {}), **(resources.get("requests") or {})}, step
        assert "memgov.io/pool" not in (pod.get("nodeSelector") or {}), step


def test_the_shipped_manifests_validate_against_the_kubernetes_schemas():
    for path in sorted((ROOT / "infra" / "k8s").glob("*.yaml")):
        if path.name == "values.yaml":  # Helm values, not a manifest
            continue
        for manifest in yaml.safe_load_all(path.read_text()):
            _validate(manifest)


def test_run_pods_keep_no_change_log_inbox_or_lock_of_their_own(tmp_path, monkeypatch):
    """With the deployment's settings a pod's change log is a cache of the S3 mirror, never a chain of its own, its
    inbox folder a working copy of the bucket's inbox, and the cycle lock a lease in the bucket."""
    from pipelines.deployment.workspace import Workspace

    (config_map,) = yaml.safe_load_all((ROOT / "infra" / "k8s" / "memgov-env.yaml").read_text())
    for key, value in config_map["data"].items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("MEMGOV_HOME", str(tmp_path / "pod-disk"))
    log = Workspace.open().log
    assert log.primary == "mirror"
    assert log.mirror.uri == "s3://memgov-artifacts-log/prod"
    inbox = Workspace.open().remote_inbox
    assert inbox is not None and inbox.uri == "s3://memgov-artifacts/inbox"
    assert inbox.folder == tmp_path / "pod-disk" / "inbox"
    from pipelines.cycle.lock import shared_lock

    assert shared_lock(), "a cycle's lock is the deployment's lease, not one pod's file"


def test_every_pod_that_runs_memgov_reads_its_secrets_from_read_only_mounts_outside_its_home():
    """The system key, UI secret and lineage key come from the Secret memgov-secrets and the keyring from a
    ConfigMap, in the webserver, the code location and every run pod; none is on a pod's disk or in the bucket."""
    values = yaml.safe_load((ROOT / "infra" / "k8s" / "values.yaml").read_text())
    (config_map,) = yaml.safe_load_all((ROOT / "infra" / "k8s" / "memgov-env.yaml").read_text())
    env = config_map["data"]
    pods = {"webserver": values["dagsterWebserver"],
            "code location": values["dagster-user-deployments"]["deployments"][0],
            "run pods": values["runLauncher"]["config"]["k8sRunLauncher"]}
    for name, pod in pods.items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["memgov-secrets"]["secret"]["secretName"] == "memgov-secrets", name
        mounts = {m["name"]: m for m in pod["volumeMounts"]}
        assert all(m["readOnly"] for m in mounts.values()), name
        for var, volume in (("MEMGOV_SYSTEM_KEY", "memgov-secrets"), ("MEMGOV_UI_SECRET_FILE", "memgov-secrets"),
                            ("MEMGOV_LINEAGE_KEY", "memgov-secrets"), ("MEMGOV_KEYRING", "memgov-keyring")):
            assert env[var].startswith(mounts[volume]["mountPath"] + "/"), (name, var)
            assert not env[var].startswith(env["MEMGOV_HOME"]), var
