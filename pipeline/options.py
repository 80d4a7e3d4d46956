"""Shared plumbing for the Beam entry points: flags, runner defaults, output directories."""

from __future__ import annotations

import argparse
import logging

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.presets import as_flags, load_preset

BEAM_FLAGS_NOTE = (
    "Beam's own flags follow the job's: --runner (DirectRunner by default; DataflowRunner, "
    "FlinkRunner, ...), --direct_num_workers, --project, --region, --temp_location, ... "
    "See https://beam.apache.org/documentation/runners/capability-matrix/ and `make help`."
)


def command_parser(prog: str, description: str, **kwargs) -> argparse.ArgumentParser:
    """The parser of a ``beamcap`` subcommand: its module docstring is the help text."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )


def _truth(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_switch(group, flag: str, help_text: str) -> None:
    """A boolean flag that also takes a value: ``--x``, ``--x=true``, ``--x=false`` (the form
    Dataflow flex templates pass)."""
    group.add_argument(
        flag,
        nargs="?",
        const=True,
        default=False,
        type=_truth,
        help=help_text + " (default: false)",
    )


def add_precision_flag(group) -> None:
    group.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="encoder compute type: bf16 on CPUs with AVX512_BF16/AMX and on GPUs, fp16 on "
        "older GPUs; weights stay float32 (default: %(default)s)",
    )


class JobFlags:
    """A job's own flags, declared once in ``add_arguments``; ``REQUIRED`` names the
    mandatory ones.

    These are deliberately not ``PipelineOptions`` subclasses: Beam parses every registered
    subclass into one parser, so two jobs both declaring ``--output`` would conflict in a
    process that imports both (the demo, the tests).
    """

    REQUIRED: tuple[str, ...] = ()
    PRESET_SECTION = ""  # the section of a configs/*.yaml preset that holds these flags

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        raise NotImplementedError


def parse_job_options(flags: type[JobFlags], argv: list[str], *, prog: str, description: str):
    """Returns (the job's flags, Beam's options from every other flag); ``--help`` lists the
    job's flags, a bad or missing one exits with a usage message."""
    parser = command_parser(prog, description, epilog=BEAM_FLAGS_NOTE)
    parser.add_argument(
        "--config",
        default=None,
        help=f"preset name (configs/NAME.yaml) or YAML path: its '{flags.PRESET_SECTION}' "
        "section sets this job's flags and its 'beam' section Beam's; flags given here win",
    )
    flags.add_arguments(parser)
    chosen, _ = parser.parse_known_args(argv)
    if chosen.config:
        preset = load_preset(chosen.config)
        argv = [
            *as_flags(preset.get(flags.PRESET_SECTION) or {}),
            *as_flags(preset.get("beam") or {}, hyphens=False),
            *argv,
        ]
    job, beam_args = parser.parse_known_args(argv)
    missing = [
        flag for flag in flags.REQUIRED if getattr(job, flag.lstrip("-").replace("-", "_")) is None
    ]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    return job, PipelineOptions(beam_args)


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
