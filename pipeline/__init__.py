"""Entry points: one module per job or command, each with ``main(argv)``; ``cli`` dispatches."""

import os

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) hides the job's own log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
