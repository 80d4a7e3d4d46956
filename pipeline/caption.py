"""``beamcap caption``: images -> captions with scores and N-best alternatives, in Parquet.

    MatchImages -> [SkipAlreadyDone] -> Reshuffle -> ReadShards -> ReadImages
    -> CaptionOncePerContent -> ReadAndDecode
    -> CaptionImages (RunInference: batched InceptionV3 + beam search in one stage)
    -> WriteCaptions;  every stage's failures -> WriteFailures;  tallies + written files
    -> CommitRun

An image is known by its content too (``transforms/content.py``): CRC-32C and size, from the
listing for ``gs://`` objects (MatchImages), else hashed by ReadImages over the bytes it reads.
Identical contents in one run are read, decoded and captioned once, and with ``--only-new`` a
new URI whose content this model captioned in a committed run gets that caption without the
model, and on ``gs://`` without a read (``reused_from`` names where it came from).

Tar shards (WebDataset's, ``--input 'gs://B/shards/{00000..00099}.tar'``) cross the shuffle
as one element each; ReadShards streams each on the worker it lands on, and each image member
goes on as an image of its own, ``SHARD#MEMBER`` (``transforms/shards.py``).

Each run writes ``OUTPUT/runs/RUN_ID/``: ``captions-*.parquet``, ``failures-*.parquet``,
``summary.json`` (counts, model, wall time, images/s) and then ``_SUCCESS``. Every matched
file is in exactly one of captions and failures, unless ``--only-new`` skipped it as done by an
earlier committed run (counted as ``skipped_as_done``). A fault that is not an image's (bad
settings, a broken model, more failed images than ``--max-failed-fraction``) fails the run
instead: exit status 1, one line saying why, ``_FAILED`` with the reason and no ``_SUCCESS``,
so the next ``--only-new`` run picks its images up again. An ``--only-new`` run holds the
output's lease (``pipeline.lease``): while another live run holds it, this one starts nothing
and exits with status 75. See docs/architecture.md and the README's "Run on a schedule".

    beamcap caption --input 'photos/**.jpg' --model data/model --output out/captions
    python -m pipeline.caption --input gs://B/images/ --model gs://B/models/v1 \\
        --output gs://B/captions --runner DataflowRunner ...      # see `make run-dataflow`
    python -m pipeline.caption ... --runner FlinkRunner --job_endpoint HOST:8099  # `make run-flink`
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from models import storage
from models.captioner.beam_search import BEAM_SIZE, MAX_LENGTH
from models.captioner.engines import (
    AUTO,
    PRECISION_HELP,
    PRECISIONS,
    choose,
    parts_read,
    refuse_missing,
)
from models.captioner.manifest import Manifest, verify_bundle
from models.configs import SettingsError, setting
from pipeline import caption_commit, cluster_health, progress
from pipeline.inference_metrics import log_inference
from pipeline.lease import DEFAULT_MINUTES
from pipeline.lifecycle import RunLifecycle
from pipeline.output_root import RUN_ID, SUMMARY, OutputRoot, new_run_id
from pipeline.settings import parse_job
from transforms.caption_schema import CAPTIONS_SCHEMA
from transforms.commit import CommitRun, WriteRunParquet
from transforms.content import REUSED, CaptionOncePerContent, ReadImages, failures_per_copy
from transforms.decode import DEFAULT_MAX_PIXELS, ReadAndDecode
from transforms.failures import WriteFailures
from transforms.inference import BundleHandler, CaptionImages
from transforms.match import (
    LookUpImages,
    MatchImages,
    expand_braces,
    has_wildcard,
    read_input_list,
    split_inputs,
)
from transforms.progress import count, stop_counting
from transforms.shards import TALLY, ReadShards, is_shard
from transforms.skip import SkipAlreadyDone


@dataclasses.dataclass(frozen=True)
class CaptionSettings:
    input: str = setting(
        None,
        "images, image directories (searched recursively), glob patterns ('**' recurses) or "
        "tar shards (WebDataset's: each image member is captioned; 'shards/{00000..00099}.tar'), "
        "local or gs://, as many as you like (--input a.jpg b.jpg photos/, or comma-separated); "
        "give this or --input-list",
        type=str,
        uris=True,
        many=True,
    )
    input_list: str = setting(
        None,
        "a text file with one image or tar shard URI per line (instead of --input)",
        type=str,
        uris=True,
    )
    model: str = setting(
        None, "model bundle directory from `beamcap train`", type=str, required=True, uris=True
    )
    output: str = setting(
        None, "output root; each run writes OUTPUT/runs/RUN_ID/", type=str, required=True, uris=True
    )
    beam_size: int = setting(BEAM_SIZE, "beam width; 1 is greedy decoding", minimum=1, maximum=64)
    max_length: int = setting(
        MAX_LENGTH, "most tokens per caption, <end> included", minimum=1, maximum=200
    )
    length_penalty: float = setting(
        0.0, "score = log_prob / length**penalty", minimum=0.0, maximum=10.0
    )
    num_candidates: int = setting(
        None,
        "N-best alternatives kept per image, at most the beam size (default: the beam size)",
        type=int,
        minimum=1,
    )
    batch_size: int = setting(
        32,
        "largest batch per encoder/beam-search call; 256+ on GPU workers",
        minimum=1,
        maximum=4096,
    )
    min_batch_size: int | None = setting(
        None,
        "smallest batch BatchElements may choose, at most --batch-size (default: --batch-size, "
        "full batches; BatchElements' own choice ran CPU engines at 8 images a batch, up to "
        "1.6x slower than 32)",
        type=int,
        minimum=1,
    )
    precision: str = setting(AUTO, PRECISION_HELP, choices=PRECISIONS)
    max_pixels: int = setting(
        DEFAULT_MAX_PIXELS, "larger images fail as possible decompression bombs", minimum=1
    )
    max_failed_fraction: float = setting(
        0.5,
        "fail the run instead of committing it when more than this share of the matched "
        "images failed (a systematic fault, not bad files); 0 disables",
        minimum=0.0,
        maximum=1.0,
    )
    share_model_across_processes: bool = setting(
        False,
        "load one model per worker machine instead of one per process (GPU workers "
        "running several SDK processes)",
    )
    run_id: str = setting(
        None,
        "name of this run's directory (default: UTC time + random suffix); must not exist yet",
        type=str,
    )
    only_new: bool = setting(
        False,
        "skip images already captioned, or already failed, in a committed run under the same "
        "--output, as long as the file is unchanged (what a schedule wants); one such run at "
        "a time: another one holding the output's lease makes this one exit with status 75",
    )
    only_new_for_model: bool = setting(
        False,
        "--only-new, but an image counts as done only when this bundle's model captioned it "
        "(a new model recaptions what others did)",
    )
    retry_failures: bool = setting(
        False, "with --only-new: also retry images that failed in earlier runs"
    )
    reuse_captions: bool = setting(
        True,
        "images with the same content (CRC-32C and size) are decoded and captioned once per "
        "run, and with --only-new a new image whose content this model captioned in a "
        "committed run, under any name, gets that caption without the model (column "
        "reused_from); --reuse-captions=false captions every image itself",
    )
    quiet: bool = setting(False, "show no progress while the run goes")
    progress_seconds: float = setting(
        None,
        "seconds between progress lines (default: 1 on a terminal, where one line is redrawn; "
        "30 elsewhere, for cron and Airflow logs)",
        type=float,
        minimum=0.1,
    )
    lease_minutes: int = setting(
        DEFAULT_MINUTES,
        "how long an --only-new run holds the output's lease: longer than your longest run, "
        "or another run may take it over; a killed run on this host frees it at once",
        minimum=1,
        maximum=7 * 24 * 60,
    )

    def check(self) -> None:
        if bool(self.input) == bool(self.input_list):
            raise SettingsError("give exactly one of --input and --input-list")
        if self.retry_failures and not self.incremental:
            raise SettingsError("--retry-failures goes with --only-new")
        if self.num_candidates is not None and self.num_candidates > self.beam_size:
            raise SettingsError(
                f"--num-candidates must be <= --beam-size ({self.beam_size}), "
                f"got {self.num_candidates}"
            )
        if self.min_batch_size is not None and self.min_batch_size > self.batch_size:
            raise SettingsError(
                f"--min-batch-size must be <= --batch-size ({self.batch_size}), "
                f"got {self.min_batch_size}"
            )
        if self.run_id is not None and not RUN_ID.fullmatch(self.run_id):
            raise SettingsError(
                f"--run-id must be letters, digits, '.', '_' or '-', got {self.run_id!r}"
            )
        for path in (p for given in split_inputs(self.input or "") for p in expand_braces(given)):
            local = path and not storage.is_gcs(path) and not has_wildcard(path)
            if local and not os.path.exists(path):
                raise SettingsError(f"--input: {path} does not exist")

    @property
    def incremental(self) -> bool:
        """An --only-new run: it skips what is done and holds the output's lease."""
        return self.only_new or self.only_new_for_model

    @property
    def search(self) -> dict:
        return dict(
            beam_size=self.beam_size,
            max_length=self.max_length,
            length_penalty=self.length_penalty,
            num_candidates=self.num_candidates,
        )


def engine_here(settings: CaptionSettings, manifest: dict):
    """The launch's part of the engine rule (``models.captioner.engines``): an engine asked for
    by name that the bundle lacks is refused; returns the engine this machine would choose,
    whose files the launch verifies (each worker chooses for its own CPU and GPU, and verifies
    the files it reads)."""
    refuse_missing(settings.precision, manifest, settings.model)
    choice = choose(settings.precision, manifest)
    logging.info(
        "engine here: %s on %s (%s); each worker chooses for itself",
        choice.precision, choice.runtime, choice.reason,
    )  # fmt: skip
    return choice


# Over 60 lines: the caption job's graph, one labelled step after another, as Beam shows it.
def build(
    pipeline,
    settings: CaptionSettings,
    *,
    life: RunLifecycle,
    manifest: dict,
    started_at: float,
    done: list[str] = (),
    known: list[str] = (),
    before_success=None,
):
    """The caption job's graph, committing ``life``'s run; with ``settings.only_new``, images
    listed in the ``done`` Parquet files (earlier committed runs) are skipped, and images whose
    content the ``known`` captions files hold get those captions. ``before_success(run_path)``
    runs in the commit between summary.json and _SUCCESS (the fault tests' hold)."""
    run = life.run_dir
    if settings.input_list:
        listed = read_input_list(settings.input_list)
        matched = pipeline | "LookUpImages" >> LookUpImages(listed)
    else:
        patterns = split_inputs(settings.input)
        matched = pipeline | "MatchImages" >> MatchImages(patterns, identities=True)
    uris = matched  # (uri, payload): the identity (gs://: and checksum) rides along
    if settings.incremental:
        model_id = manifest.model_id if settings.only_new_for_model else None
        uris = matched | "SkipAlreadyDone" >> SkipAlreadyDone(list(done), model_id=model_id)
    read = (
        uris
        | "Redistribute" >> beam.Reshuffle()
        | "ReadShards" >> beam.ParDo(ReadShards()).with_outputs("failures", TALLY, main="images")
    )
    hashed = read.images | "ReadImages" >> beam.ParDo(ReadImages()).with_outputs(
        "failures", main="read"
    )
    once = hashed.read | "CaptionOncePerContent" >> CaptionOncePerContent(
        list(known),
        model_id=manifest.model_id,
        run_id=run.run_id,
        enabled=settings.reuse_captions,
    )
    decoded = once.to_caption | "ReadAndDecode" >> beam.ParDo(
        ReadAndDecode(
            manifest.encoder.image_size,
            max_pixels=settings.max_pixels,
            preprocessing=manifest.encoder.preprocessing,
        )
    ).with_outputs("failures", main="decoded")
    handler = BundleHandler(
        settings.model,
        model_id=manifest.model_id,
        search=settings.search,
        precision=settings.precision,
        min_batch_size=settings.min_batch_size or settings.batch_size,
        max_batch_size=settings.batch_size,
        share_across_processes=settings.share_model_across_processes,
    )
    captioned, caption_failures, engines = decoded.decoded | "CaptionImages" >> CaptionImages(
        handler, run_id=run.run_id
    )
    rows = (captioned, once[REUSED]) | "AllRows" >> beam.Flatten()
    written = rows | "WriteCaptions" >> WriteRunParquet(run.file("captions"), CAPTIONS_SCHEMA)
    failures = (
        (read.failures, hashed.failures, decoded.failures, caption_failures)
        | "AllFailures" >> beam.Flatten()
        | "FailuresPerCopy" >> beam.FlatMap(failures_per_copy)
    )
    failed_files = failures | "WriteFailures" >> WriteFailures(
        run.file("failures"), run_id=run.run_id
    )
    live = run.progress_dir
    tallies = [  # a shard counts by its members, as ReadShards lists them
        count(
            matched,
            lambda m: "shards" if is_shard(m[0]) else "matched",
            "TallyMatched",
            progress_dir=live,
        ),
        count(
            uris,
            lambda u: "shards_to_read" if is_shard(u[0]) else "to_caption",
            "TallyToCaption",
            progress_dir=live,
        ),
        count(read[TALLY], lambda key: key, "TallyShardMembers", progress_dir=live),
        count(  # before the Flatten, which a runner may run after both its inputs: live
            captioned,
            lambda row: "reused" if row["reused_from"] else "captioned",
            "TallyCaptioned",
            progress_dir=live,
        ),
        count(once[REUSED], "reused", "TallyReused", progress_dir=live),
        count(engines, lambda engine: f"{caption_commit.ENGINE}{engine}", "TallyEngines"),
        count(failures, lambda f: f"failed_{f['stage']}", "TallyFailed", progress_dir=live),
    ]

    def commit(tally, _files):  # the files: written before this runs, not read
        def record():
            return caption_commit.summary(
                tally, settings=settings, run=run, manifest=manifest, started_at=started_at
            )

        return life.commit(SUMMARY, record, before_success=before_success)

    return pipeline | "CommitRun" >> CommitRun(
        tallies=tallies, files=[written, failed_files], commit=commit
    )


def run(argv: list[str], *, wait: bool = True, before_success=None):
    """Runs one captioning run and returns its summary; with ``wait=False`` (a scheduler's
    launch, a Dataflow ``--dry_run``) returns Beam's PipelineResult as soon as it is submitted.
    Raises ``SettingsError`` before anything starts, ``OutputBusy`` when another live run
    holds the output's lease (``--only-new``), ``RunFailed`` for a failed run.
    ``before_success``: see :func:`build`."""
    job = parse_job(
        CaptionSettings, argv, prog="beamcap caption", description=__doc__, section="caption"
    )
    cluster_health.check_slots(cluster_health.cluster_of(PipelineOptions(job.beam_args)))
    settings, manifest = job.settings, Manifest.read(job.settings.model)
    verify_bundle(settings.model, manifest, parts_read(engine_here(settings, manifest), manifest))
    life = new_run(settings)
    run_dir = life.run_dir
    # A launcher that hands the job to a remote runner (wait=False) is no proof of life.
    with life.leased(pid=os.getpid() if wait else None):
        pipeline = beam.Pipeline(options=PipelineOptions(job.beam_args))
        earlier = earlier_runs(settings)
        started_at = time.time()
        build(pipeline, settings, life=life, manifest=manifest, started_at=started_at,
              before_success=before_success, **earlier)  # fmt: skip
        quiet = settings.quiet or not wait
        try:
            with progress.shown(run_dir.progress_dir, every=settings.progress_seconds, quiet=quiet):
                result = life.run(pipeline, wait=wait)
        finally:  # an in-process runner's counting ends with the run
            stop_counting(run_dir.progress_dir)
    if not wait:
        logging.info("submitted run %s; it commits to %s", run_dir.run_id, run_dir.path)
        return result
    summary = run_dir.record(SUMMARY)
    logging.info("run %s committed to %s: %s", run_dir.run_id, run_dir.path, summary["counts"])
    for engine in summary["engines"]:
        logging.info(
            "%d images on %s (%s) on %s: %s",
            engine["images"], engine["precision"], engine["runtime"], engine["cpu"],
            engine["reason"],
        )  # fmt: skip
    log_inference(result)
    return summary


def new_run(settings: CaptionSettings) -> RunLifecycle:
    """A new run under ``--output``: ``--run-id`` or a new id, never one already used."""
    root = OutputRoot(settings.output)
    life = RunLifecycle.of(
        root,
        settings.run_id or new_run_id(),
        exclusive=settings.incremental,
        lease_minutes=settings.lease_minutes,
    )
    if life.run_dir.holds_files():
        raise SettingsError(f"--run-id: {life.run_dir.path} exists; a run id is never reused")
    return life


def earlier_runs(settings: CaptionSettings) -> dict:
    """What an ``--only-new`` run reads of the committed runs: the Parquet files of the images
    ``done`` and of the captions ``known`` by content."""
    if not settings.incremental:
        return {"done": [], "known": []}
    root = OutputRoot(settings.output)
    done = root.done_files(retry_failures=settings.retry_failures)
    return {"done": done, "known": root.captions_files() if settings.reuse_captions else []}


def main(argv: list[str] | None = None, *, before_success=None) -> int:
    summary = run(sys.argv[1:] if argv is None else argv, before_success=before_success)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    from pipeline.cli import bound_exit
    from pipeline.cli import main as beamcap

    sys.exit(bound_exit(beamcap(["caption", *sys.argv[1:]])))
