"""Caption files into the pipeline, paired with their images, and the vocabulary built from
them."""

from __future__ import annotations

import dataclasses
import posixpath

import apache_beam as beam

from models.captioner.vocabulary import Vocabulary, tokenize
from models.datasets.caption_files import read_caption_file
from models.datasets.splits import split_for

SKIPPED = "skipped_lines"


class ReadCaptions(beam.PTransform):
    """A caption file -> ``(image_name, caption)`` pairs; skipped bad lines as a tagged output.

    The file is parsed by one worker (caption files are megabytes, COCO's JSON needs a whole
    parse) and the pairs are redistributed.
    """

    def __init__(self, uri: str, *, skip_bad_lines: bool = False):
        super().__init__()
        self.uri = uri
        self.skip_bad_lines = skip_bad_lines

    def expand(self, pipeline):
        skip = self.skip_bad_lines

        def read(uri):
            result = read_caption_file(uri, skip_bad_lines=skip)
            for reason in result.skipped:
                yield beam.pvalue.TaggedOutput(SKIPPED, reason)
            yield from result.pairs

        results = (
            pipeline
            | "File" >> beam.Create([self.uri])
            | "Parse" >> beam.FlatMap(read).with_outputs(SKIPPED, main="pairs")
        )
        return results.pairs | "Redistribute" >> beam.Reshuffle(), results[SKIPPED]


class BuildVocabulary(beam.PTransform):
    """Captions -> a one-element PCollection holding the :class:`Vocabulary` (a side input)."""

    def __init__(self, *, min_count: int = 1, max_size: int | None = None):
        super().__init__()
        self.min_count = min_count
        self.max_size = max_size

    def expand(self, captions):
        min_count, max_size = self.min_count, self.max_size
        word_counts = (
            captions
            | "Words" >> beam.FlatMap(tokenize)
            | "Count" >> beam.combiners.Count.PerElement()
            | "AsDict" >> beam.combiners.ToDict()
        )
        num_captions = captions | "CountCaptions" >> beam.combiners.Count.Globally()
        return word_counts | "Build" >> beam.Map(
            lambda counts, n: Vocabulary.from_counts(
                counts, num_captions=n, min_count=min_count, max_size=max_size
            ),
            n=beam.pvalue.AsSingleton(num_captions),
        )


@dataclasses.dataclass(frozen=True)
class ImageTask:
    """What the features job carries along with an image through decoding and encoding."""

    image_id: str  # the file name the caption files use
    split: str  # train, val or test
    captions: tuple[str, ...]
    image_data: bytes | None = None  # the decoded pixels as PNG, with --with-images


def train_captions(task: tuple[str, ImageTask]) -> tuple[str, ...]:
    """``(uri, ImageTask)`` -> its captions if it is a training image: the vocabulary's input."""
    return task[1].captions if task[1].split == "train" else ()


def route_joined(item, *, val_fraction: float, test_fraction: float):
    """CoGroupByKey result -> ``(uri, ImageTask)``, or a tally of what is off."""
    image_id, grouped = item
    uris, captions = sorted(grouped["uris"]), list(grouped["captions"])
    if not uris:
        yield beam.pvalue.TaggedOutput("tally", ("captions_without_image", len(captions)))
        return
    if not captions:
        yield beam.pvalue.TaggedOutput("tally", ("images_without_captions", len(uris)))
        return
    if len(uris) > 1:
        yield beam.pvalue.TaggedOutput("tally", ("duplicate_image_names", len(uris) - 1))
    split = split_for(image_id, val_fraction=val_fraction, test_fraction=test_fraction)
    yield uris[0], ImageTask(image_id, split, tuple(captions))


class PairWithCaptions(beam.PTransform):
    """(image URIs, ``(image_name, caption)`` pairs) -> ``(uri, ImageTask)``
    per captioned image, its split from a stable hash of the name; and ``(key, n)`` tallies of
    captions without an image, images without captions and duplicate names."""

    def __init__(self, *, val_fraction: float, test_fraction: float):
        super().__init__()
        self.fractions = dict(val_fraction=val_fraction, test_fraction=test_fraction)

    def expand(self, inputs):
        uris, captions = inputs
        routed = (
            {
                "uris": uris | "KeyByName" >> beam.Map(lambda uri: (posixpath.basename(uri), uri)),
                "captions": captions,
            }
            | "Join" >> beam.CoGroupByKey()
            | "Route"
            >> beam.FlatMap(route_joined, **self.fractions).with_outputs("tally", main="tasks")
        )
        return routed.tasks, routed.tally
