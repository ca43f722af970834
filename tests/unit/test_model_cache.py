"""The local model cache is re-hashed on every load: a weights file swapped on the host is never served."""

from __future__ import annotations

import json

import pytest

from pipelines.deployment.artifacts import model_path
from pipelines.deployment.workspace import Workspace


@pytest.fixture
def stored(tmp_path):
    ws = Workspace.open(tmp_path / "home")
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "stand-in"}))
    (folder / "model.safetensors").write_bytes(b"genuine weights" * 100)
    return ws, ws.store.put_dir(folder)


def test_a_swapped_file_in_the_cache_is_restored_from_the_store(stored):
    ws, digest = stored
    path = model_path(ws, digest)
    (path / "model.safetensors").write_bytes(b"backdoored weights")
    again = model_path(ws, digest)
    assert (again / "model.safetensors").read_bytes() == b"genuine weights" * 100


def test_a_file_added_to_the_cache_is_not_loaded(stored):
    ws, digest = stored
    path = model_path(ws, digest)
    (path / "adapter_config.json").write_text("{}")
    assert not (model_path(ws, digest) / "adapter_config.json").exists()


def test_a_corrupted_blob_in_the_store_fails_naming_it(stored):
    ws, digest = stored
    blobs = [p for p in (ws.home / "artifacts" / "blobs").rglob("*") if p.is_file() and p.read_bytes().startswith(b"genuine")]
    assert blobs, "the weights blob is in the local store"
    blobs[0].write_bytes(b"corrupted")
    with pytest.raises(Exception, match=blobs[0].name[:12]):
        model_path(ws, digest)
