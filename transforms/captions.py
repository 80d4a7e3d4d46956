"""Caption files into the pipeline, and the vocabulary built from them."""

from __future__ import annotations

import apache_beam as beam

from models.caption_files import read_caption_file
from models.vocabulary import Vocabulary, tokenize

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
