"""Beam's ``GcsIO`` builds its Cloud Storage client and its retry for every instance through two
module functions that no option reaches: ``gcsio.create_storage_client(pipeline_options,
use_credentials=True)`` and ``gcsio_retry.get_retry(pipeline_options)``. :func:`route` puts the
caller's own in their place; :data:`beams_client` and :data:`beams_retry` stay Beam's.
"""

from __future__ import annotations

from collections.abc import Callable

from apache_beam.io.gcp import gcsio, gcsio_retry

beams_client = gcsio.create_storage_client
beams_retry = gcsio_retry.get_retry


def route(client: Callable, retry: Callable) -> None:
    """Every ``GcsIO`` made from now on, in this process, takes its client from
    ``client(pipeline_options, use_credentials=True)`` and its retry from
    ``retry(pipeline_options)``."""
    gcsio.create_storage_client = client
    gcsio_retry.get_retry = retry
