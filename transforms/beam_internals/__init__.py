"""Every use of Apache Beam's private API, behind one door. Each module fixes one real problem
that Beam's public API leaves open, and tests/transforms/test_beam_internals.py holds a guard test
per private name it relies on, which fails when Beam changes it:

  gcs_client.py    GcsIO's client and retry, made per call by two module functions, wrapped
  parquet_sink.py  WriteToParquet's sink without the clean-up that breaks a re-run finalize
  portable.py      a portable run's job id; the SDK worker pool probed over Beam's gRPC API
  logs.py          Beam's loggers and the records they repeat, quietened
  options.py       Beam's flag parser, to list the flags no options class takes

Importing it checks that the installed Beam is one these were written for (:data:`WRITTEN_FOR`,
the pin in constraints.txt); with another the import fails in one line. The version is read from
the installed distribution: ``apache_beam.__version__`` without importing Beam, which
``logs.py`` (set up by every command's flag parser) does not need.
"""

from __future__ import annotations

import re
from importlib import metadata

from models.configs import SettingsError

WRITTEN_FOR = ((2, 77), (2, 78))  # Beam releases from 2.77 up to, not including, 2.78


class UntestedBeam(SettingsError):
    """The installed Beam is outside :data:`WRITTEN_FOR`."""


def check_version(version: str) -> None:
    """Raises :class:`UntestedBeam` unless ``version`` is in :data:`WRITTEN_FOR`."""
    (low, high), found = WRITTEN_FOR, re.match(r"(\d+)\.(\d+)", version)
    if found is None or not low <= (int(found[1]), int(found[2])) < high:
        raise UntestedBeam(
            f"apache-beam {version} is installed, but transforms/beam_internals was written for "
            f"apache-beam>={low[0]}.{low[1]},<{high[0]}.{high[1]}: install the version pinned in "
            "constraints.txt, or widen WRITTEN_FOR once tests/transforms/test_beam_internals.py "
            "passes"
        )


check_version(metadata.version("apache-beam"))
