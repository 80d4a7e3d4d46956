"""Read caption runs: ``OUTPUT/runs/RUN_ID/``, committed once ``_SUCCESS`` is there."""

from __future__ import annotations

import json
import posixpath

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.caption_sink import CAPTIONS_SCHEMA
from transforms.failures import FAILURE_SCHEMA

SUCCESS, SUMMARY = "_SUCCESS", "summary.json"


def is_committed(run_dir: str) -> bool:
    return FileSystems.exists(FileSystems.join(run_dir, SUCCESS))


def _read_parquet(run_dir: str, stem: str, schema: pa.Schema) -> pa.Table:
    pattern = FileSystems.join(run_dir, f"{stem}-*.parquet")
    paths = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    tables = []
    for path in paths:
        with FileSystems.open(path) as handle:
            tables.append(pq.read_table(pa.BufferReader(handle.read())))
    return pa.concat_tables(tables).cast(schema) if tables else schema.empty_table()


def read_run(run_dir: str) -> tuple[pa.Table, pa.Table, dict]:
    """(captions, failures, summary) of a committed run; an uncommitted one is an error."""
    if not is_committed(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a committed run (no {SUCCESS})")
    with FileSystems.open(FileSystems.join(run_dir, SUMMARY)) as handle:
        summary = json.loads(handle.read())
    return (
        _read_parquet(run_dir, "captions", CAPTIONS_SCHEMA),
        _read_parquet(run_dir, "failures", FAILURE_SCHEMA),
        summary,
    )


def committed_runs(output: str) -> list[str]:
    """The committed run directories under ``OUTPUT/runs/``, oldest first (ids sort by time)."""
    pattern = FileSystems.join(output, "runs", "*", SUCCESS)
    return sorted(posixpath.dirname(m.path) for m in FileSystems.match([pattern])[0].metadata_list)


def list_runs(output: str) -> list[dict]:
    """The summary of every committed run, oldest first."""
    summaries = []
    for run_dir in committed_runs(output):
        with FileSystems.open(FileSystems.join(run_dir, SUMMARY)) as handle:
            summaries.append({**json.loads(handle.read()), "run_dir": run_dir})
    return summaries


def read_captions(output: str) -> pa.Table:
    """Every committed run's captions as one table, the latest caption of each image only
    (a later run wins; within a run, rows are unique)."""
    tables = []
    for index, run_dir in enumerate(committed_runs(output)):  # oldest first
        table = _read_parquet(run_dir, "captions", CAPTIONS_SCHEMA)
        tables.append(table.append_column("_run", pa.array([index] * table.num_rows, pa.int32())))
    if not tables:
        return CAPTIONS_SCHEMA.empty_table()
    every = pa.concat_tables(tables)
    grouped = every.group_by("image_uri").aggregate([("_run", "max")])
    latest = pa.table({"image_uri": grouped["image_uri"], "_run": grouped["_run_max"]})
    # Arrow joins cannot carry list columns: join the keys with row numbers, then take rows.
    keys = pa.table(
        {
            "image_uri": every["image_uri"],
            "_run": every["_run"],
            "_row": pa.array(range(every.num_rows), pa.int64()),
        }
    )
    rows = keys.join(latest, keys=["image_uri", "_run"], join_type="inner")["_row"]
    return every.take(rows).drop_columns(["_run"]).sort_by("image_uri")


def main(argv: list[str] | None = None) -> int:
    """``beamcap runs OUTPUT``: the committed runs under an output root, with their counts."""
    import sys

    from pipeline.options import command_parser

    parser = command_parser("beamcap runs", main.__doc__)
    parser.add_argument("output", help="the --output root of `beamcap caption` runs")
    parser.add_argument("--json", action="store_true", help="print the summaries as JSON")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    runs = list_runs(args.output)
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    print(
        f"{'run_id':<26}{'matched':>9}{'skipped':>9}{'captioned':>11}{'failed':>8}"
        f"{'images/s':>10}  model"
    )
    for run in runs:
        counts = run["counts"]
        print(
            f"{run['run_id']:<26}{counts['matched']:>9}{counts.get('skipped_as_done', 0):>9}"
            f"{counts['captioned']:>11}{sum(counts['failed'].values()):>8}"
            f"{run['images_per_second'] or 0:>10.1f}  {run['model_id']}"
        )
    print(f"{len(runs)} committed runs under {args.output}")
    return 0
