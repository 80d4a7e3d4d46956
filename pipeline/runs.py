"""``beamcap runs``: the table of an output root's runs. Where a run's files are, and what its
states mean, is ``pipeline.output_root``'s; how a run ends committed or failed,
``pipeline.lifecycle``'s.
"""

from __future__ import annotations

import json

from pipeline.lifecycle import clean_abandoned
from pipeline.output_root import ABANDONED, STATES, OutputRoot


def _age(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _unfinished_note(run: dict) -> str:
    covering = run["lease"]
    if covering is None:
        return f"age {_age(run['age_seconds'])}; no live lease: abandoned (see --clean)"
    process = f" pid {covering['pid']}" if covering["pid"] is not None else ""
    return (
        f"age {_age(run['age_seconds'])}; leased by {covering['host']}{process} "
        f"until {covering['expires_at']}"
    )


def main(argv: list[str] | None = None) -> int:
    """``beamcap runs OUTPUT``: the runs under an output root: committed ones with their
    counts, failed ones with their reason, unfinished ones with their age and the lease that
    still covers them (none: the run died). ``--clean`` marks those abandoned."""

    from pipeline.settings import Parser

    parser = Parser("beamcap runs", main.__doc__)
    parser.add_argument("output", help="the --output root of `beamcap caption` runs")
    parser.add_argument("--json", action="store_true", help="print the runs as JSON")
    parser.add_argument(
        "--clean",
        action="store_true",
        help="mark unfinished runs that no live lease covers failed (reason: abandoned) and "
        "remove their temporary files; committed and live runs are left alone",
    )
    args = parser.parse_args(argv)
    root = OutputRoot(args.output)
    if args.clean:
        for run_id in clean_abandoned(root):
            print(f"marked {run_id} failed: {ABANDONED}; its temporary files removed")
    runs = root.list_runs()
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    print(
        f"{'run_id':<26}{'state':<11}{'matched':>9}{'skipped':>9}{'captioned':>11}{'failed':>8}"
        f"{'images/s':>10}  model or reason"
    )
    for run in runs:
        if run["state"] != "committed":
            note = _unfinished_note(run) if run["state"] == "unfinished" else run["reason"]
            print(f"{run['run_id']:<26}{run['state']:<11}{'':>57}  {note}")
            continue
        counts = run["counts"]
        print(
            f"{run['run_id']:<26}{'committed':<11}{counts['matched']:>9}"
            f"{counts.get('skipped_as_done', 0):>9}{counts['captioned']:>11}"
            f"{sum(counts['failed'].values()):>8}{run['images_per_second'] or 0:>10.1f}"
            f"  {run['model_id']}"
        )
    tally = {state: sum(run["state"] == state for run in runs) for state in STATES}
    states = ", ".join(f"{n} {state}" for state, n in tally.items())
    print(f"{len(runs)} runs under {args.output}: {states}")
    return 0
