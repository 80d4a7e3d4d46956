"""Faults of the model rather than of an image, without Keras: the jobs import this to tell a
run's faults from an image's before any model is loaded."""


class ModelFault(RuntimeError):
    """The model, not its input, is at fault: it returned non-finite values (no uint8 image
    makes sound weights do that). A job fails the whole run on it."""
