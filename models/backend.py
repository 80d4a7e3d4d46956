"""Loading Keras and its backend quietly.

TensorFlow's C++ libraries log at load time through absl before absl is initialised, so
``TF_CPP_MIN_LOG_LEVEL`` does not reach those lines ("oneDNN custom operations are on",
"Could not find cuda drivers"...). :func:`load_keras` imports Keras with file descriptor 2
pointed at /dev/null for that moment, unless ``TF_CPP_MIN_LOG_LEVEL`` is 0 (``--log-level
debug``). Python exceptions are unaffected: they propagate after the descriptor is restored.
"""

from __future__ import annotations

import contextlib
import os
import sys

TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"


@contextlib.contextmanager
def native_stderr_silenced():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def set_tensorflow_log_level(debug: bool | None = None) -> None:
    """TensorFlow's C++ log level, the one place beamcap sets it (``models`` does on import):
    errors only, or everything when ``debug``; None keeps a level the environment gives.
    It takes effect when TensorFlow is imported."""
    if debug is None:
        os.environ.setdefault(TF_LOG_LEVEL, "3")
    else:
        os.environ[TF_LOG_LEVEL] = "0" if debug else "3"


def load_keras():
    """Imports and returns ``keras`` (and so its backend), quietly unless debugging."""
    if "keras" in sys.modules or os.environ.get(TF_LOG_LEVEL) == "0":
        import keras

        return keras
    with native_stderr_silenced():
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.list_physical_devices()  # device discovery logs too (cuInit)
    return keras
