"""Every fault beamcap names, in one hierarchy, without Keras or Beam: each type carries the exit
status and the heading ``beamcap`` ends on (``pipeline.cli`` maps by type, never by text).

    BeamcapError
      Refused             2  nothing started: a flag, preset, path or bundle (one line naming it)
        SettingsError        a setting out of range or unknown
        BundleError          a bundle missing a part, or a part that does not match its manifest
      RunFault            1  a fault of the run, not of an image
        ModelFault           the model returned non-finite values
        StorageUnavailable   Cloud Storage did not answer
        ClusterUnavailable   a part of the cluster is missing
          JobServerLost      the runner's job server stopped answering mid-run
        RunFailed            a run that ended failed (marked ``_FAILED``), with its first reason
      OutputBusy         75  another live run holds the output's lease: try again later

:class:`StageFailed` is no fault of the run: an image's outcome at a stage, recorded as data.
"""


class BeamcapError(Exception):
    """A fault the ``beamcap`` command ends on in one line: ``HEADING: MESSAGE``, ``exit_code``."""

    exit_code = 1
    heading = "error"


class Refused(BeamcapError, ValueError):
    """Refused before anything started; the message is one line naming the flag or file."""

    exit_code = 2


class SettingsError(Refused):
    """A setting out of range or unknown; the message is one line naming the flag or file."""


class BundleError(Refused):
    """A bundle is missing a part, or a part does not match its manifest. At launch that is a
    refusal (docs/reliability.md); inside a running job it fails the run like any other fault."""


class RunFault(BeamcapError, RuntimeError):
    """A fault of the run, not of an image; raised inside a worker, it fails the run."""


class ModelFault(RunFault):
    """The model, not its input, is at fault: it returned non-finite values (no uint8 image
    makes sound weights do that). A job fails the whole run on it."""


class StorageUnavailable(RunFault):
    """Cloud Storage did not answer; the message names it, its address and what went wrong."""


class ClusterUnavailable(RunFault):
    """A part of the cluster the run needs is missing; the message names it and its address."""


class JobServerLost(ClusterUnavailable):
    """The runner's job server stopped answering while a job ran; the message names its address."""


class RunFailed(RunFault):
    """The run stopped on a fault that is not an image's; the message is the one-line reason."""

    heading = "run failed"


class OutputBusy(BeamcapError):
    """Another live run holds the output's lease; the message names it."""

    exit_code = 75  # sysexits.h EX_TEMPFAIL: "try again later"
    heading = "busy"


class StageFailed(Exception):
    """An image failed at a named ``stage`` of the model (``encode``): ``error`` is what
    went wrong. A job records it as a failure of that stage, with the error's own type."""

    def __init__(self, stage: str, error: Exception):
        super().__init__(stage, error)  # as its args: it pickles, between Beam's workers too
        self.stage, self.error = stage, error

    def __str__(self) -> str:
        return f"{self.stage}: {type(self.error).__name__}: {self.error}"
