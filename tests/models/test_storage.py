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


def test_glob_and_exists_on_gcs(gcs_emulator):
    root = "gs://beamcap-test/storage-test"
    names = ("train-0.tfrecord", "train-1.tfrecord", "val-0.tfrecord", "train-x/y.tfrecord")
    for name in names:
        storage.write_text(f"{root}/{name}", name)
    assert storage.glob(f"{root}/train-*.tfrecord") == [
        f"{root}/train-0.tfrecord",
        f"{root}/train-1.tfrecord",
    ]
    assert storage.exists(f"{root}/val-0.tfrecord") and not storage.exists(f"{root}/nothing")
