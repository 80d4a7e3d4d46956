"""Faults of the model rather than of an image, without Keras: the jobs import this to tell a
run's faults from an image's before any model is loaded."""


class StageFailed(Exception):
    """An image failed at a named ``stage`` of the model (``encode``): ``error`` is what
    went wrong. A job records it as a failure of that stage, with the error's own type."""

    def __init__(self, stage: str, error: Exception):
        super().__init__(stage, error)  # as its args: it pickles, between Beam's workers too
        self.stage, self.error = stage, error

    def __str__(self) -> str:
        return f"{self.stage}: {type(self.error).__name__}: {self.error}"


class ModelFault(RuntimeError):
    """The model, not its input, is at fault: it returned non-finite values (no uint8 image
    makes sound weights do that). A job fails the whole run on it."""
