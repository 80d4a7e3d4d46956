"""Shared plumbing for the Beam entry points: flags, runner defaults, output directories."""

from __future__ import annotations

import argparse
import logging

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

BEAM_FLAGS_NOTE = (
    "Beam's own flags follow the job's: --runner (DirectRunner by default; DataflowRunner, "
    "FlinkRunner, ...), --direct_num_workers, --project, --region, --temp_location, ... "
    "See https://beam.apache.org/documentation/runners/capability-matrix/ and `make help`."
)


def parse_job_options(
    options_class: type[PipelineOptions], argv: list[str], *, prog: str, description: str
):
    """Validates the job flags (``--help`` lists them all) and returns (job view, options).

    The flags are declared once, in ``options_class._add_argparse_args``; the same declarations
    give the ``--help`` text and Beam's typed view. Flags named in ``options_class.REQUIRED``
    are checked here, not declared ``required``: Beam parses every options class in the
    process, so a required flag would break unrelated pipelines.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=BEAM_FLAGS_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options_class._add_argparse_args(parser)
    known, _ = parser.parse_known_args(argv)  # exits with a usage message on a bad job flag
    missing = [
        flag
        for flag in getattr(options_class, "REQUIRED", ())
        if getattr(known, flag.lstrip("-").replace("-", "_")) is None
    ]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    options = PipelineOptions(argv)
    return options.view_as(options_class), options


def prepare_output_dir(output: str, *, overwrite: bool) -> None:
    """Refuses to write into a directory that already holds files, unless ``overwrite``
    (Beam's file sinks can keep an earlier run's shards when a prefix is reused)."""
    existing = [m.path for m in FileSystems.match([FileSystems.join(output, "*")])[0].metadata_list]
    if existing and not overwrite:
        raise SystemExit(
            f"{output} already holds {len(existing)} files (e.g. {existing[0]}); choose a new "
            "output directory or pass --overwrite"
        )
    if existing:
        FileSystems.delete(existing)


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("absl", "apache_beam.runners.portability", "apache_beam.runners.worker"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
