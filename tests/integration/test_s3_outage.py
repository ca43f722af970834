"""The S3 endpoint going away in the middle of an upload, through a TCP proxy in front of moto's server that
cuts every connection once a set number of bytes has gone upstream: the store retries a bounded number of times,
then fails with one clear error; what reached S3 is whole, and once the endpoint is back the same upload
completes to the same digest."""

from __future__ import annotations

import os
import socket
import threading
import time

import boto3
import pytest
from support_s3 import CREDS, free_port, s3_server

from pipelines.core.digests import dir_digest
from pipelines.state.store import S3Store
from pipelines.state.store.base import StoreUnavailable
from pipelines.state.store.s3 import ATTEMPTS


class CuttingProxy:
    """Forwards TCP to `upstream`; after `budget` bytes client→server it closes every connection and refuses new
    ones, as an endpoint that went down would."""

    def __init__(self, upstream_port: int, budget: int):
        self.port, self.budget, self.sent = free_port(), budget, 0
        self.upstream_port, self.down, self.lock = upstream_port, threading.Event(), threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.down.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if upstream:
                    with self.lock:
                        self.sent += len(chunk)
                        if self.sent > self.budget:
                            self.cut()
                            return
                dst.sendall(chunk)
        except OSError:
            pass

    def cut(self) -> None:
        self.down.set()
        for sock in [self.listener, *self.sockets]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@pytest.fixture
def endpoint():
    with s3_server() as url:
        yield url


def test_an_endpoint_lost_mid_upload_fails_clearly_after_bounded_retries_and_loses_nothing(endpoint, tmp_path):
    bucket = "outage"
    boto3.client("s3", endpoint_url=endpoint, **CREDS).create_bucket(Bucket=bucket)
    folder = tmp_path / "model"
    folder.mkdir()
    for i in range(6):
        (folder / f"shard-{i}.bin").write_bytes(os.urandom(512 * 1024))
    proxy = CuttingProxy(int(endpoint.rsplit(":", 1)[1]), budget=1_300_000)  # dies during the third shard
    store = S3Store(bucket, "deploy", endpoint_url=f"http://127.0.0.1:{proxy.port}", **CREDS)

    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as failure:
        store.put_dir(folder)
    elapsed = time.monotonic() - started
    message = str(failure.value)
    assert f"s3://{bucket}/deploy is unreachable" in message and f"after {ATTEMPTS} attempts" in message
    assert "retry once it is back" in message
    assert proxy.down.is_set() and elapsed < 60, f"bounded: gave up after {elapsed:.1f} s"

    direct = S3Store(bucket, "deploy", endpoint_url=endpoint, **CREDS)  # the endpoint is back
    listed = boto3.client("s3", endpoint_url=endpoint, **CREDS).list_objects_v2(Bucket=bucket)
    stored = [item["Key"] for item in listed.get("Contents", [])]
    assert 0 < len(stored) < 6, "the cut fell in the middle of the upload"
    for key in stored:  # whatever reached S3 is whole: each blob's content matches its name
        digest = "sha256:" + key.rsplit("/", 1)[1]
        assert len(direct.get_bytes(digest)) == 512 * 1024
    assert direct.put_dir(folder) == dir_digest(folder)
    restored = direct.get_dir(dir_digest(folder), tmp_path / "restored")
    assert sorted(p.read_bytes() for p in restored.iterdir()) == sorted(p.read_bytes() for p in folder.iterdir())
