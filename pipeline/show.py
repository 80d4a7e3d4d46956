"""``beamcap show OUTPUT``: a committed caption run's N-best captions per image, in the form of
im2txt's ``run_inference``::

    Captions for image photos/dinner.jpg:
      0) a group of people sitting at tables in a room . (p=0.000306)
      1) ...

p is the caption's probability, exp(log_prob). The latest committed run under OUTPUT unless
``--run-id`` names one; the run's failed images follow, with their stage and reason.
"""

from __future__ import annotations

import math

from models.configs import SettingsError
from pipeline.output_root import OutputRoot
from pipeline.settings import Parser


def format_run(captions: list[dict], failures: list[dict]) -> str:
    """The text ``beamcap show`` prints for a run's caption and failure rows."""
    lines = []
    for row in sorted(captions, key=lambda r: r["image_uri"]):
        lines.append(f"Captions for image {row['image_uri']}:")
        for rank, candidate in enumerate(row["candidates"]):
            p = math.exp(candidate["log_prob"])
            lines.append(f"  {rank}) {candidate['caption']} (p={p:f})")
    for row in sorted(failures, key=lambda r: r["image_uri"]):
        lines.append(f"Failed image {row['image_uri']} at {row['stage']}: {row['message']}")
    return "\n".join(lines) + ("\n" if lines else "")


def main(argv: list[str]) -> int:
    parser = Parser("beamcap show", __doc__)
    parser.add_argument("output", help="the --output root of `beamcap caption` runs")
    parser.add_argument("--run-id", help="the run to show (default: the latest committed one)")
    args = parser.parse_args(argv)
    root = OutputRoot(args.output)
    if args.run_id:
        run = root.run(args.run_id)
    else:
        runs = root.committed_runs()
        if not runs:
            raise SettingsError(f"{args.output} holds no committed caption run")
        run = runs[-1]
    try:
        captions, failures, _ = run.read()
    except FileNotFoundError as error:
        raise SettingsError(str(error)) from None
    print(f"run {run.run_id}:")
    print(format_run(captions.to_pylist(), failures.to_pylist()), end="")
    return 0
