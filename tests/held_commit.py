"""The commit hold the fault tests inject through an argument (``caption.run(before_success=
...)``), never through the environment: between summary.json and ``_SUCCESS`` the commit writes
``PID RUN_DIR`` to ``FILE.reached`` and waits while ``FILE`` exists (up to 5 min), the window in
which a test kills the commit's worker or cuts storage off. Pickled with the graph, it reaches
the worker that commits (a Flink SDK worker imports it from the repository).

    python -m tests.held_commit FILE caption FLAGS...   # `beamcap caption FLAGS` with the hold
"""

import dataclasses
import os
import sys
import time


@dataclasses.dataclass(frozen=True)
class CommitHold:
    """Holds a commit while the file ``path`` exists; without it, does nothing."""

    path: str
    timeout: float = 300

    def __call__(self, run_dir: str) -> None:
        if not os.path.exists(self.path):
            return
        with open(f"{self.path}.reached", "w") as reached:
            reached.write(f"{os.getpid()} {run_dir}")
        deadline = time.time() + self.timeout
        while os.path.exists(self.path) and time.time() < deadline:
            time.sleep(0.2)


def main(argv: list[str]) -> int:
    hold, command, *flags = argv
    assert command == "caption", "only the caption job commits with a hold"
    from pipeline import caption, cli

    held = CommitHold(hold)
    return cli.exit_status("beamcap caption", lambda: caption.main(flags, before_success=held))


if __name__ == "__main__":
    from pipeline.cli import bound_exit

    sys.exit(bound_exit(main(sys.argv[1:])))
