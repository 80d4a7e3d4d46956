"""``beamcap caption``: images -> captions with scores and N-best alternatives, in Parquet.

    MatchImages -> [SkipAlreadyCaptioned] -> Reshuffle -> ReadAndDecode -> CaptionImages
    (batched InceptionV3 + beam search, one fused stage) -> WriteCaptions;
    every stage's failures -> WriteFailures

Each run writes ``OUTPUT/runs/RUN_ID/``: ``captions-*.parquet``, ``failures-*.parquet``,
``summary.json`` (counts, model id, wall time, images/s) and then ``_SUCCESS``. Every matched
file is in exactly one of captions and failures, unless ``--only-new`` skipped it as done by an
earlier committed run (counted as ``skipped_as_done``).

    beamcap caption --input 'photos/**.jpg' --model data/model --output out/captions
    python -m pipeline.caption --input gs://B/images/ --model gs://B/models/v1 \\
        --output gs://B/captions --runner DataflowRunner ...      # see `make run-dataflow`
    python -m pipeline.caption ... --runner FlinkRunner --flink_master HOST:8081  # `make run-flink`
"""

from __future__ import annotations

import datetime
import json
import logging
import secrets
import sys
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from models import storage
from models.bundle import read_manifest
from pipeline.options import (
    JobFlags,
    add_precision_flag,
    add_switch,
    configure_logging,
    parse_job_options,
)
from pipeline.runs import SUCCESS, SUMMARY, committed_runs
from transforms.caption import CaptionImages
from transforms.caption_sink import CAPTIONS_SCHEMA
from transforms.decode import DEFAULT_MAX_PIXELS, ReadAndDecode
from transforms.failures import STAGES, WriteFailures
from transforms.match import MatchImages
from transforms.skip import SkipAlreadyDone


class CaptionFlags(JobFlags):
    REQUIRED = ("--model", "--output")
    PRESET_SECTION = "caption"

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group("caption job")
        group.add_argument(
            "--input",
            default=None,
            help="comma-separated image directories (searched recursively) or "
            "glob patterns ('**' recurses), local or gs://",
        )
        group.add_argument(
            "--input-list",
            default=None,
            help="a text file with one image URI per line (instead of --input)",
        )
        group.add_argument("--model", help="model bundle directory from `beamcap train`")
        group.add_argument("--output", help="output root; each run writes OUTPUT/runs/RUN_ID/")
        group.add_argument(
            "--beam-size",
            type=int,
            default=3,
            help="beam width; 1 is greedy decoding (default: %(default)s)",
        )
        group.add_argument(
            "--max-length",
            type=int,
            default=20,
            help="most tokens per caption, <end> included (default: %(default)s)",
        )
        group.add_argument(
            "--length-penalty",
            type=float,
            default=0.0,
            help="score = log_prob / length**penalty (default: %(default)s)",
        )
        group.add_argument(
            "--num-candidates",
            type=int,
            default=None,
            help="N-best alternatives kept per image (default: the beam size)",
        )
        group.add_argument(
            "--batch-size",
            type=int,
            default=32,
            help="largest batch per encoder/beam-search call (default: "
            "%(default)s; 256+ on GPU workers)",
        )
        group.add_argument(
            "--min-batch-size",
            type=int,
            default=8,
            help="smallest batch BatchElements starts from (default: %(default)s)",
        )
        add_precision_flag(group)
        group.add_argument(
            "--max-pixels",
            type=int,
            default=DEFAULT_MAX_PIXELS,
            help="larger images fail as possible decompression bombs (default: %(default)s)",
        )
        group.add_argument(
            "--run-id",
            default=None,
            help="name of this run's directory (default: UTC time + random "
            "suffix); must not exist yet",
        )
        add_switch(
            group,
            "--only-new",
            "skip images already captioned, or already failed, in a committed run under the "
            "same --output (what a schedule wants)",
        )
        add_switch(
            group,
            "--retry-failures",
            "with --only-new: also retry images that failed in earlier runs",
        )


def new_run_id() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + (
        secrets.token_hex(3)
    )


def read_input_list(uri: str) -> list[str]:
    lines = [line.strip() for line in storage.read_text(uri).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def write_summary(_, *, run_dir, tally, model_id, run_id, started_at):
    """summary.json, then _SUCCESS: the run is committed once both exist."""
    seconds = time.time() - started_at
    counts = {
        "matched": int(tally.get("matched", 0)),
        "skipped_as_done": int(tally.get("matched", 0)) - int(tally.get("to_caption", 0)),
        "captioned": int(tally.get("captioned", 0)),
        "failed": {stage: int(tally.get(f"failed_{stage}", 0)) for stage in STAGES},
    }
    summary = {
        "run_id": run_id,
        "model_id": model_id,
        "counts": counts,
        "started_at": datetime.datetime.fromtimestamp(
            started_at, datetime.timezone.utc
        ).isoformat(),
        "wall_seconds": round(seconds, 2),
        "images_per_second": round(counts["captioned"] / seconds, 2) if seconds else None,
    }
    storage.write_text(FileSystems.join(run_dir, SUMMARY), json.dumps(summary, indent=2))
    storage.write_text(FileSystems.join(run_dir, SUCCESS), "")
    return summary


def done_files(output: str, *, retry_failures: bool) -> list[str]:
    """Parquet patterns of the committed runs whose images ``--only-new`` skips."""
    stems = ("captions",) if retry_failures else ("captions", "failures")
    return [
        FileSystems.join(run_dir, f"{stem}-*.parquet")
        for run_dir in committed_runs(output)
        for stem in stems
    ]


def build(
    pipeline,
    job,
    *,
    run_id: str,
    run_dir: str,
    image_size: int,
    model_id: str,
    started_at: float,
    done: list[str] = (),
):
    """The caption job's graph; with ``job.only_new``, images listed in the ``done`` Parquet
    files (earlier committed runs) are skipped."""
    if job.input_list:
        matched = pipeline | "ListImages" >> beam.Create(read_input_list(job.input_list))
    else:
        matched = pipeline | "MatchImages" >> MatchImages(job.input.split(","))
    uris = matched
    if job.only_new:
        uris = matched | "SkipAlreadyCaptioned" >> SkipAlreadyDone(list(done))
    search = dict(
        beam_size=job.beam_size,
        max_length=job.max_length,
        length_penalty=job.length_penalty,
        num_candidates=job.num_candidates,
    )
    decoded = (
        uris
        | "Redistribute" >> beam.Reshuffle()
        | "WithoutPayload" >> beam.Map(lambda uri: (uri, None))
        | "ReadAndDecode"
        >> beam.ParDo(ReadAndDecode(image_size, max_pixels=job.max_pixels)).with_outputs(
            "failures", main="decoded"
        )
    )
    rows, caption_failures = decoded.decoded | "CaptionImages" >> CaptionImages(
        job.model,
        run_id=run_id,
        search=search,
        precision=job.precision,
        min_batch_size=job.min_batch_size,
        max_batch_size=job.batch_size,
    )
    written = rows | "WriteCaptions" >> beam.io.WriteToParquet(
        FileSystems.join(run_dir, "captions"), CAPTIONS_SCHEMA, file_name_suffix=".parquet"
    )
    failures = (decoded.failures, caption_failures) | "AllFailures" >> beam.Flatten()
    failed_files = failures | "WriteFailures" >> WriteFailures(
        FileSystems.join(run_dir, "failures"), run_id=run_id
    )
    tally = (
        (
            matched | "TallyMatched" >> beam.Map(lambda _: ("matched", 1)),
            uris | "TallyToCaption" >> beam.Map(lambda _: ("to_caption", 1)),
            rows | "TallyCaptioned" >> beam.Map(lambda _: ("captioned", 1)),
            failures | "TallyFailed" >> beam.Map(lambda f: (f"failed_{f['stage']}", 1)),
        )
        | "AllTallies" >> beam.Flatten()
        | "SumTallies" >> beam.CombinePerKey(sum)
    )
    files = (written, failed_files) | "AllFiles" >> beam.Flatten()
    return (
        pipeline
        | "Commit" >> beam.Create([None])
        | "WaitForFiles" >> beam.Map(lambda x, files: x, files=beam.pvalue.AsList(files))
        | "WriteSummary"
        >> beam.Map(
            write_summary,
            run_dir=run_dir,
            tally=beam.pvalue.AsDict(tally),
            model_id=model_id,
            run_id=run_id,
            started_at=started_at,
        )
    )


def run(argv: list[str], *, wait: bool = True):
    """Runs one captioning run and returns its summary; with ``wait=False`` (a scheduler's
    launch, a Dataflow ``--dry_run``) returns Beam's PipelineResult as soon as it is submitted."""
    job, options = parse_job_options(
        CaptionFlags, argv, prog="beamcap caption", description=__doc__
    )
    if bool(job.input) == bool(job.input_list):
        raise SystemExit("beamcap caption: give exactly one of --input and --input-list")
    if job.retry_failures and not job.only_new:
        raise SystemExit("beamcap caption: --retry-failures goes with --only-new")
    manifest = read_manifest(job.model)  # fails fast on a wrong path, before any worker starts
    run_id = job.run_id or new_run_id()
    run_dir = FileSystems.join(job.output, "runs", run_id)
    if FileSystems.match([FileSystems.join(run_dir, "*")])[0].metadata_list:
        raise SystemExit(f"{run_dir} exists: a run id is never reused")
    started_at = time.time()
    pipeline = beam.Pipeline(options=options)
    build(
        pipeline,
        job,
        run_id=run_id,
        run_dir=run_dir,
        image_size=manifest["encoder"]["image_size"],
        model_id=manifest["model_id"],
        started_at=started_at,
        done=done_files(job.output, retry_failures=job.retry_failures) if job.only_new else [],
    )
    result = pipeline.run()
    if not wait:
        logging.info("submitted run %s; it commits to %s", run_id, run_dir)
        return result
    result.wait_until_finish()
    summary = json.loads(storage.read_text(FileSystems.join(run_dir, SUMMARY)))
    logging.info("run %s committed to %s: %s", run_id, run_dir, summary["counts"])
    return summary


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    summary = run(sys.argv[1:] if argv is None else argv)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
