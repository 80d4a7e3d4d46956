"""The ``beamcap`` command: ``beamcap SUBCOMMAND [flags]``; ``beamcap SUBCOMMAND --help`` for each.

Every subcommand is a module of this package with a ``main(argv)``; Beam jobs take Beam's own
flags (``--runner`` and the rest) after theirs.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "demo": ("pipeline.demo", "the whole job on the synthetic dataset, offline"),
    "synth": ("pipeline.synth", "generate the synthetic captioned dataset"),
    "features": ("pipeline.features", "images + captions -> TFRecord features (a Beam job)"),
    "train": ("pipeline.train", "fit the caption decoder on features; write a model bundle"),
    "caption": (
        "pipeline.caption",
        "images -> captions with scores and N-best, Parquet (Beam job)",
    ),
    "evaluate": ("pipeline.evaluate", "score a caption run: BLEU, ROUGE-L, CIDEr-D, attributes"),
    "runs": ("pipeline.runs", "list the committed caption runs under an output root"),
    "report": ("pipeline.report", "write an HTML page of a caption run"),
    "inspect": ("pipeline.inspect_bundle", "verify a model bundle and print its manifest"),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items()]
    return "usage: beamcap SUBCOMMAND [flags]\n\nsubcommands:\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"beamcap: unknown subcommand {name!r}\n\n{usage()}", end="", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
