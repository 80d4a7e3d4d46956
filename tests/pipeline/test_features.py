import collections
import csv
import glob
import posixpath
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from models.captioner.encoder import EncoderSpec, ImageEncoder
from models.captioner.vocabulary import Vocabulary
from models.configs import SettingsError
from models.datasets.feature_records import decode_png
from models.datasets.splits import split_for
from tests.conftest import TINY_IMAGES, TINY_SIZE, run_features, runner_flags
from tests.jobs import assert_same_features, records
from transforms.captions import ImageTask, route_joined
from transforms.decode import decode_image


def captions_by_image(dataset):
    table = collections.defaultdict(list)
    with open(dataset / "captions.txt", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            table[row["image"]].append(row["caption"])
    return table


def test_counts_account_for_every_image_and_caption(tiny_features):
    _, dataset = tiny_features
    counts = dataset["counts"]
    assert counts["train_images"] + counts["val_images"] + counts["test_images"] == TINY_IMAGES
    assert counts["train_captions"] + counts["val_captions"] + counts["test_captions"] == (
        TINY_IMAGES * 6
    )
    assert counts["failed_images"] == 2
    assert counts["captions_without_image"] == 2
    assert min(counts["train_images"], counts["val_images"], counts["test_images"]) > 0


def test_records_match_direct_encoding(tiny_dataset, tiny_features):
    output, dataset = tiny_features
    vocabulary = Vocabulary.load(str(output / "vocab.txt"))
    encoder = ImageEncoder(EncoderSpec("random:3", TINY_SIZE))
    expected_captions = captions_by_image(tiny_dataset)
    found = records(output)
    assert sum(len(split) for split in found.values()) == TINY_IMAGES
    for split, items in found.items():
        for image_id, record in items.items():
            assert posixpath.basename(record.uri) == image_id
            assert split == split_for(image_id, val_fraction=0.2, test_fraction=0.2)
            assert sorted(record.caption_texts) == sorted(expected_captions[image_id])
            assert record.caption_ids == [vocabulary.encode(t) for t in record.caption_texts]
            assert record.fingerprint == encoder.fingerprint == dataset["encoder"]["fingerprint"]
            pixels, _, _ = decode_image(Path(record.uri).read_bytes(), TINY_SIZE)
            np.testing.assert_allclose(
                record.features, encoder.encode(pixels[None])[0], rtol=1e-4, atol=1e-5
            )
            assert len(record.features) == dataset["encoder"]["feature_dim"] == 2048


def test_prism_writes_the_same_records(tiny_dataset, tiny_features, tmp_path):
    output = tmp_path / "prism"
    dataset = run_features(tiny_dataset, output, runner=runner_flags("PrismRunner"))
    assert_same_features(tiny_features, output, dataset)


def test_vocabulary_comes_from_train_captions_only(tiny_features):
    output, _ = tiny_features
    words = set(Vocabulary.load(str(output / "vocab.txt")).words)
    assert any(word.startswith("trainonly") for word in words)
    assert not any(word.startswith(("valonly", "testonly")) for word in words)


def test_broken_images_land_in_failures(tiny_features):
    output, _ = tiny_features
    table = pq.read_table(glob.glob(f"{output}/failures-*.parquet")).to_pylist()
    failed = {posixpath.basename(row["image_uri"]): row for row in table}
    assert set(failed) == {"truncated.jpg", "not-an-image.jpg"}
    assert {row["stage"] for row in table} == {"decode"}
    assert all(row["message"] and row["error_type"] for row in table)


def test_splits_are_stable_across_runs(tiny_dataset, tiny_features, tmp_path):
    output, _ = tiny_features
    run_features(tiny_dataset, tmp_path / "again")
    first = {split: set(items) for split, items in records(output).items()}
    second = {split: set(items) for split, items in records(tmp_path / "again").items()}
    assert first == second


def test_refuses_a_used_output_dir(tiny_dataset, tiny_features):
    output, _ = tiny_features
    with pytest.raises(SettingsError, match="--overwrite"):
        run_features(tiny_dataset, output)


def test_join_routes_orphans_and_duplicates():
    joined = [
        ("a.jpg", {"uris": ["/x/a.jpg"], "captions": ["one", "two"]}),
        ("b.jpg", {"uris": [], "captions": ["orphan", "orphan 2"]}),
        ("c.jpg", {"uris": ["/x/c.jpg"], "captions": []}),
        ("d.jpg", {"uris": ["/y/d.jpg", "/x/d.jpg"], "captions": ["dup"]}),
    ]
    with test_pipeline.TestPipeline(runner=FnApiRunner()) as pipeline:
        routed = (
            pipeline
            | beam.Create(joined)
            | beam.FlatMap(route_joined, val_fraction=0.0, test_fraction=0.0).with_outputs(
                "tally", main="tasks"
            )
        )
        assert_that(
            routed.tasks,
            equal_to(
                [
                    ("/x/a.jpg", ImageTask("a.jpg", "train", ("one", "two"))),
                    ("/x/d.jpg", ImageTask("d.jpg", "train", ("dup",))),
                ]
            ),
            label="CheckTasks",
        )
        assert_that(
            routed.tally,
            equal_to(
                [
                    ("captions_without_image", 2),
                    ("images_without_captions", 1),
                    ("duplicate_image_names", 1),
                ]
            ),
            label="CheckTally",
        )


def test_with_images_stores_the_pixels_the_encoder_saw(tiny_features, tiny_image_features):
    plain, _ = tiny_features
    output, dataset = tiny_image_features
    assert dataset["settings"]["with_images"] is True
    assert dataset["counts"] == tiny_features[1]["counts"]
    without = {i: r for split in records(plain).values() for i, r in split.items()}
    found = records(output)
    assert sum(len(split) for split in found.values()) == TINY_IMAGES
    for items in found.values():
        for image_id, record in items.items():
            assert without[image_id].image_data is None
            pixels, _, _ = decode_image(Path(record.uri).read_bytes(), TINY_SIZE)
            np.testing.assert_array_equal(decode_png(record.image_data), pixels)
            np.testing.assert_allclose(
                record.features, without[image_id].features, rtol=1e-4, atol=1e-5
            )
            assert record.caption_ids == without[image_id].caption_ids
