"""Beam's logs below ``--log-level debug``: its chattier loggers raised to a floor, and the
records it repeats dropped, since the run's one-line reason already says what they say. Which
of Beam's modules and functions log what is Beam's own business, hence here.
"""

from __future__ import annotations

import logging

_FLOORS = {
    "apache_beam.runners.portability": logging.WARNING,
    "apache_beam.runners.worker": logging.WARNING,
    "apache_beam.typehints": logging.WARNING,  # "Converting string literal type hint"
    "apache_beam.io.iobase": logging.WARNING,  # "WriteImpl min_shards undef"
    "apache_beam.runners.common": logging.CRITICAL,  # a failing step's traceback
    "apache_beam.runners.worker.sdk_worker": logging.CRITICAL,  # the same, on portable runners
    "PrismRunner": logging.CRITICAL,  # Prism's log of a failed bundle: the same traceback
}
SPURIOUS = ("Resource module is not available", "Really destroying service")


def quieten(root: logging.Logger) -> None:
    """Beam's loggers at their floor (or ``root``'s level, if higher); ``root``'s handlers
    filter Beam's spurious warnings and a portable job's failure traceback."""
    for name, floor in _FLOORS.items():
        logging.getLogger(name).setLevel(max(floor, root.level))
    for handler in root.handlers:
        handler.addFilter(_spurious_warning)
        handler.addFilter(_portable_job_traceback)


def _spurious_warning(record: logging.LogRecord) -> bool:
    """RunInference warns on every model load that it cannot read the RSS when an optional
    import of its (torch-only) model manager fails, although ``resource`` is there; Beam warns
    as it stops its own Prism or job server at exit ("Really destroying service")."""
    return not record.getMessage().startswith(SPURIOUS)


def _portable_job_traceback(record: logging.LogRecord) -> bool:
    """Portable runners (Prism, Flink, Spark) send a failed step's traceback as a job message,
    which Beam logs at ERROR on the root logger; the run's one-line reason already says it."""
    return not (
        record.levelno >= logging.ERROR
        and record.module == "portable_runner"
        and record.funcName == "read_messages"
    )
