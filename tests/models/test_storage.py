"""models.storage: the Beam-free byte API, the same on local paths and gs://."""

from models import storage


def test_glob_exists_and_round_trip_locally(tmp_path):
    for name in ("train-0.tfrecord", "train-1.tfrecord", "val-0.tfrecord", "train-x/y.tfrecord"):
        storage.write_text(str(tmp_path / "data" / name), name)
    (tmp_path / "data" / "train-dir.tfrecord").mkdir()  # a directory is not a file
    found = storage.glob(str(tmp_path / "data" / "train-*.tfrecord"))
    assert [p.rsplit("/", 1)[1] for p in found] == ["train-0.tfrecord", "train-1.tfrecord"]
    assert storage.exists(found[0]) and not storage.exists(str(tmp_path / "data"))
    assert storage.read_text(found[1]) == "train-1.tfrecord"


def test_glob_and_exists_on_gcs(new_bucket):
    root = f"gs://{new_bucket('storage')}/storage-test"
    names = ("train-0.tfrecord", "train-1.tfrecord", "val-0.tfrecord", "train-x/y.tfrecord")
    for name in names:
        storage.write_text(f"{root}/{name}", name)
    assert storage.glob(f"{root}/train-*.tfrecord") == [
        f"{root}/train-0.tfrecord",
        f"{root}/train-1.tfrecord",
    ]
    assert storage.exists(f"{root}/val-0.tfrecord") and not storage.exists(f"{root}/nothing")


def test_only_one_exclusive_create_wins_on_gcs(new_bucket):
    """fake-gcs-server honours ``ifGenerationMatch=0`` on uploads, as Cloud Storage does."""
    uri = f"gs://{new_bucket('exclusive')}/_LEASE"
    assert storage.create_exclusive(uri, b"first")
    assert not storage.create_exclusive(uri, b"second")
    assert storage.read_bytes(uri) == b"first"


def test_delete_if_version_spares_a_newer_version_on_gcs(new_bucket):
    """The lease's conditional delete. fake-gcs-server ignores ``ifGenerationMatch`` on
    deletes (fakestorage/object.go reads only ``generation``), so what this checks on it is the
    ``generation`` that beamcap sends beside it: a delete of the generation read earlier must
    not remove the object once it has been replaced."""
    uri = f"gs://{new_bucket('versions')}/_LEASE"
    storage.write_bytes(uri, b"old")
    data, old = storage.read_versioned(uri)
    storage.write_bytes(uri, b"new")  # another run took it over meanwhile
    assert data == b"old" and not storage.delete_if_version(uri, old)
    assert storage.read_bytes(uri) == b"new"
    _, current = storage.read_versioned(uri)
    assert storage.delete_if_version(uri, current) and storage.read_versioned(uri) is None


def _tree_operations(root: str) -> None:
    """entries, files_under and remove_tree, the same on a local folder and a gs:// prefix."""
    for name in ("a.txt", "sub/b.txt", "sub/deeper/c.txt", "subway.txt"):
        storage.write_text(storage.join(root, name), name)
    assert storage.entries(root) == ["a.txt", "sub", "subway.txt"]
    assert storage.entries(storage.join(root, "sub")) == ["b.txt", "deeper"]
    assert storage.entries(storage.join(root, "nothing")) == []
    under = storage.files_under(storage.join(root, "sub"))
    assert [path for path, _ in under] == [
        storage.join(root, "sub", "b.txt"),
        storage.join(root, "sub", "deeper", "c.txt"),
    ]
    assert all(updated > 0 for _, updated in under)
    assert storage.files_under(storage.join(root, "nothing")) == []
    storage.remove_tree(storage.join(root, "sub"))  # "subway.txt" shares the prefix: it stays
    storage.remove_tree(storage.join(root, "a.txt"))
    storage.remove_tree(storage.join(root, "nothing"))  # harmless
    assert storage.entries(root) == ["subway.txt"]


def test_tree_operations_locally(tmp_path):
    _tree_operations(str(tmp_path / "root"))


def test_tree_operations_on_gcs(new_bucket):
    _tree_operations(f"gs://{new_bucket('trees')}/root")


def test_a_client_that_gets_no_answer_raises_storage_unavailable(monkeypatch):
    """Every gs:// call wraps the client's no-answer errors, by their type, into one
    StorageUnavailable naming Cloud Storage; an answer (404) stays what it was."""
    import pytest
    import requests
    from google.api_core.exceptions import NotFound

    from models.faults import RunFault, StorageUnavailable

    def refused():
        raise requests.exceptions.ConnectionError("[Errno 111] Connection refused")

    monkeypatch.delenv(storage.EMULATOR_HOST, raising=False)
    monkeypatch.setattr(storage, "_client", refused)
    calls = [
        lambda: storage.read_bytes("gs://b/x"),
        lambda: storage.exists("gs://b/x"),
        lambda: storage.glob("gs://b/*.json"),
        lambda: storage.entries("gs://b/d"),
        lambda: storage.write_text("gs://b/x", "x"),
        lambda: storage.remove("gs://b/x"),
    ]
    for call in calls:
        with pytest.raises(StorageUnavailable) as raised:
            call()
        assert str(raised.value) == (
            "Cloud Storage at https://storage.googleapis.com did not answer (connection refused)"
        )
        assert isinstance(raised.value, RunFault) and raised.value.exit_code == 1

    class Missing:
        def bucket(self, _name):
            raise NotFound("no such bucket")

    monkeypatch.setattr(storage, "_client", Missing)
    with pytest.raises(NotFound):
        storage.exists("gs://b/x")
