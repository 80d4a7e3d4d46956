"""The ``beamcap`` command: ``beamcap SUBCOMMAND [flags]``; ``beamcap SUBCOMMAND --help`` for each.

Every subcommand is a module of this package with a ``main(argv)``; Beam jobs take Beam's own
flags (``--runner`` and the rest) after theirs. Exit status: 0 done; 1 the run failed (a fault
that is not an image's: the reason is printed, the run directory marked failed); 2 refused
before anything started (a flag, preset, path or bundle: one line naming it); 75 (EX_TEMPFAIL,
"try again later") an ``--only-new`` run found another live run holding the output's lease:
nothing started, one line names the holder; a scheduler should treat it as a skipped tick.
A process whose run failed ends within ``EXIT_SECONDS`` of its line, with status 1, whatever
it left running (:func:`bound_exit`).
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import sys

SUBCOMMANDS = {
    "demo": ("pipeline.demo", "the whole job on the synthetic dataset, offline"),
    "synth": ("pipeline.synth", "generate the synthetic captioned dataset"),
    "pretrain": ("pipeline.pretrain", "fit the encoder as a classifier of labelled images"),
    "features": ("pipeline.features", "images + captions -> TFRecord features (a Beam job)"),
    "train": (
        "pipeline.train",
        "fit the decoder (phase 2: and the encoder); write a model bundle",
    ),
    "caption": (
        "pipeline.caption",
        "images -> captions with scores and N-best, Parquet (Beam job)",
    ),
    "evaluate": ("pipeline.evaluate", "score a caption run: BLEU, ROUGE-L, CIDEr-D, attributes"),
    "runs": (
        "pipeline.runs",
        "list the caption runs under an output root, with their state",
    ),
    "show": ("pipeline.show", "print a caption run's N-best captions per image"),
    "report": ("pipeline.report", "write an HTML page of a caption run"),
    "inspect": ("pipeline.inspect_bundle", "verify a model bundle and print its manifest"),
    "quantize": ("pipeline.quantize", "add the int8 CPU engine to a bundle, calibrated on images"),
    "import-im2txt": (
        "pipeline.import_im2txt",
        "a published im2txt checkpoint or frozen graph -> a model bundle",
    ),
    "quality": ("pipeline.quality", "both training phases on synthetic scenes: the quality proof"),
}

# Seconds a process whose run failed may take to exit after its line: Beam's own clean-up at
# exit (stopping a job server it started takes up to 6 s) fits well within it.
EXIT_SECONDS = 30.0


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items()]
    return "usage: beamcap SUBCOMMAND [flags]\n\nsubcommands:\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Runs ``beamcap ARGV`` and returns its exit status. Without ``argv`` this is the process's
    own command (the ``beamcap`` script, ``python -m pipeline.cli``), which ends once this
    returns: after a failed run that end is bounded (:func:`bound_exit`)."""
    if argv is None:
        return bound_exit(main(sys.argv[1:]))
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"beamcap: unknown subcommand {name!r}\n\n{usage()}", end="", file=sys.stderr)
        return 2
    prog = f"beamcap {name}"
    return exit_status(prog, lambda: importlib.import_module(SUBCOMMANDS[name][0]).main(rest))


def exit_status(prog: str, command) -> int:
    """Runs ``command()`` and returns its exit status: 0 (or what it returns); a
    :class:`models.faults.BeamcapError`'s own ``exit_code``, after one line ``PROG: HEADING:
    MESSAGE``; 2 for a missing file."""
    from models.faults import BeamcapError  # light: no framework behind it

    try:
        return command() or 0
    except BeamcapError as error:
        print(f"{prog}: {error.heading}: {error}", file=sys.stderr)
        return error.exit_code
    except FileNotFoundError as error:
        print(f"{prog}: error: {error.filename or error}: no such file", file=sys.stderr)
        return 2


def bound_exit(status: int) -> int:
    """Returns ``status``; when it is 1 (a run failed, its line written), the process will end
    within ``EXIT_SECONDS`` with status 1 whatever it left running. Interpreter exit waits for
    every non-daemon thread (a ThreadPoolExecutor's workers too), atexit handler and finalizer,
    and a failed portable run leaves Beam's gRPC streams and channels to a job server that may
    be busy retrying; past the bound faulthandler prints every thread's stack to stderr, after
    the line, and ends the process. Only for a process's own command: never in a test's."""
    if status == 1:
        sys.stdout.flush()
        sys.stderr.flush()
        with contextlib.suppress(ValueError, OSError, RuntimeError):  # stderr without a file
            faulthandler.dump_traceback_later(EXIT_SECONDS, exit=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
