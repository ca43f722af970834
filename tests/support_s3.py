"""A real S3 endpoint over HTTP for tests: moto's server, serialised so conditional writes are atomic like S3's."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AtomicMotoServer(ThreadedMotoServer):
    """moto's S3 checks If-Match/If-None-Match and then stores in separate steps, so under load two conditional
    writes can both pass (measured: 1 in 300 races). Real S3 decides each conditional write atomically; serving one
    request at a time restores that guarantee for the tests."""

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def serialised(environ, start_response):
            with lock:
                return list(app(environ, start_response))

        self._server = make_server(self._ip_address, self._port, serialised, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


@contextmanager
def s3_server() -> Iterator[str]:
    """Start the server on a free loopback port; yields its endpoint URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = AtomicMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def use_endpoint(monkeypatch, endpoint: str) -> None:
    """Point memgov and boto3 at the test endpoint with its credentials, as a deployment's environment would."""
    for key, value in {"AWS_ACCESS_KEY_ID": CREDS["aws_access_key_id"],
                       "AWS_SECRET_ACCESS_KEY": CREDS["aws_secret_access_key"],
                       "AWS_DEFAULT_REGION": CREDS["region_name"], "MEMGOV_S3_ENDPOINT": endpoint}.items():
        monkeypatch.setenv(key, value)


def create_buckets(endpoint: str) -> str:
    """Both buckets through infra/s3/create_bucket.py, as an operator makes them: the artifact bucket versioned,
    under GOVERNANCE default retention; the log mirror beside it under COMPLIANCE, with the default name."""
    import importlib.util
    import json
    import uuid
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    module_spec = importlib.util.spec_from_file_location("create_bucket", root / "infra" / "s3" / "create_bucket.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    spec = json.loads((root / "infra" / "s3" / "bucket.json").read_text())
    spec["bucket"] = f"memgov-{uuid.uuid4().hex[:10]}"
    spec["log_mirror"].pop("bucket")
    module.create_bucket(spec, endpoint_url=endpoint)
    return spec["bucket"]
