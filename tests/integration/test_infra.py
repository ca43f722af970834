"""infra/ files are applied by teams as they are: check they parse, validate against Dagster's schema, and work on S3."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import boto3
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["dagster.sqlite.yaml", "dagster.postgres.yaml"])
def test_dagster_instance_files_validate_against_dagster_schema(name, monkeypatch):
    for var in ("DAGSTER_PG_URL",):
        monkeypatch.setenv(var, "x")
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config_schema

    raw = yaml.safe_load((ROOT / "infra" / "dagster" / name).read_text())
    result = process_config(dagster_instance_config_schema(), raw)
    assert result.success, result.errors
    assert raw["telemetry"]["enabled"] is False


def test_sqlite_instance_file_starts_a_real_instance(tmp_path, monkeypatch):
    from dagster import DagsterInstance

    (tmp_path / "dagster.yaml").write_text((ROOT / "infra" / "dagster" / "dagster.sqlite.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    instance = DagsterInstance.get()
    assert instance.get_runs() == []


def test_helm_values_request_gpus_where_the_gpu_assets_run():
    values = yaml.safe_load((ROOT / "infra" / "k8s" / "values.yaml").read_text())
    assert values["dagster-user-deployments"]["deployments"][0]["dagsterApiGrpcArgs"] == ["-m", "assets.definitions"]
    from assets.definitions import defs

    gpu_nodes = []
    for job in defs.resolve_all_job_defs():
        for node in job.graph.node_defs:
            tags = getattr(node, "tags", {}) or {}
            if tags.get("memgov/gpu") == "1":
                k8s = tags["dagster-k8s/config"]
                k8s = json.loads(k8s) if isinstance(k8s, str) else k8s
                assert k8s["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
                assert k8s["pod_spec_config"]["node_selector"] == {"memgov.io/pool": "gpu"}
                gpu_nodes.append(node.name)
    assert {"candidate_update", "candidate_model", "process_forget_request"} <= set(gpu_nodes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bucket_script_creates_a_locked_versioned_bucket_over_http():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        import importlib.util

        spec_path = ROOT / "infra" / "s3" / "create_bucket.py"
        module_spec = importlib.util.spec_from_file_location("create_bucket", spec_path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        endpoint = f"http://127.0.0.1:{port}"
        spec = json.loads((ROOT / "infra" / "s3" / "bucket.json").read_text())
        for var, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")):
            import os

            os.environ.setdefault(var, value)
        module.create_bucket(spec, endpoint_url=endpoint)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        assert s3.get_bucket_versioning(Bucket=spec["bucket"])["Status"] == "Enabled"
        lock = s3.get_object_lock_configuration(Bucket=spec["bucket"])["ObjectLockConfiguration"]
        assert lock["ObjectLockEnabled"] == "Enabled"
        assert lock["Rule"]["DefaultRetention"]["Mode"] == "GOVERNANCE"
    finally:
        server.stop()
