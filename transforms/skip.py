"""Skip images that earlier runs already handled: a join inside the pipeline, so the set of
done URIs never has to fit in the launcher's memory."""

from __future__ import annotations

import apache_beam as beam


class SkipAlreadyDone(beam.PTransform):
    """URIs -> the URIs (deduplicated) that no ``done_files`` Parquet file lists in its
    ``image_uri`` column. ``done_files`` are file patterns; ones matching nothing are fine."""

    def __init__(self, done_files: list[str]):
        super().__init__()
        self.done_files = done_files

    def expand(self, uris):
        keyed = uris | "KeyNew" >> beam.Map(lambda uri: (uri, None))
        if not self.done_files:
            done = uris.pipeline | "NoDoneFiles" >> beam.Create([])
        else:
            done = (
                uris.pipeline
                | "DoneFiles" >> beam.Create(self.done_files)
                | "ReadDone" >> beam.io.ReadAllFromParquet(columns=["image_uri"])
                | "KeyDone" >> beam.Map(lambda row: (row["image_uri"], None))
            )
        return (
            {"new": keyed, "done": done}
            | "Join" >> beam.CoGroupByKey()
            | "KeepNew"
            >> beam.FlatMap(
                lambda item: [item[0]] if item[1]["new"] and not item[1]["done"] else []
            )
        )
