"""The store directly: what its caches may never hide."""
from __future__ import annotations

import pytest

from modelyard.server.registry.errors import IdTaken
from modelyard.server.registry.store import Store
from support.modelfiles import make_gguf


def test_a_commit_right_after_a_read_is_seen(tmp_path):
    """Reads, writes and the read after them fit in one tick of the file system's clock;
    the cached view must follow each write anyway (it once keyed on folder mtimes)."""
    store = Store(tmp_path / "store")
    store.create({"id": "m", "version": "1", "kind": "llm"})
    data = make_gguf(tmp_path / "m.gguf").read_bytes()
    for round_ in range(20):
        assert store.get("m")["readyToUse"] is (round_ > 0)
        with store.transfer("m") as transfer:
            transfer.writer("model").write(data)
            assert transfer.commit()["readyToUse"] is True
        assert store.get("m")["readyToUse"] is True
        assert [m["readyToUse"] for m in store.list()] == [True]
        store.update("m", {"version": str(round_)})
        assert store.get("m")["version"] == str(round_)


def test_another_process_writing_the_store_is_seen(tmp_path):
    """`modelyard fetch` writes a store the server is serving: a second Store object."""
    reader, writer = Store(tmp_path / "store"), Store(tmp_path / "store")
    writer.create({"id": "m", "version": "1", "kind": "llm"})
    assert reader.get("m")["readyToUse"] is False
    with writer.transfer("m") as transfer:
        transfer.writer("model").write(make_gguf(tmp_path / "m.gguf").read_bytes())
        transfer.commit()
    assert reader.get("m")["readyToUse"] is True
    assert reader.list(ready=True)[0]["id"] == "m"


def test_ids_that_differ_only_by_case_are_refused(tmp_path):
    """On a case-insensitive file system 'Alpha' and 'alpha' would be one folder: the
    second create would silently update the first model."""
    store = Store(tmp_path / "store")
    store.create({"id": "Alpha", "version": "1", "kind": "llm"})
    with pytest.raises(IdTaken) as e:
        store.create({"id": "alpha", "version": "2", "kind": "embed"})
    assert e.value.code == 409 and "'Alpha'" in str(e.value)
    assert [m["id"] for m in store.list()] == ["Alpha"] and store.get("Alpha")["version"] == "1"
    store.create({"id": "Alpha", "version": "3", "kind": "llm"})  # the same id still updates
    assert store.get("Alpha")["version"] == "3"
