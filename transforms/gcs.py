"""Cloud Storage as beamcap's jobs use it: one retry policy for Beam's ``gs://`` I/O and for
``models.storage``, and ``--no_auth`` honoured.

Beam's ``GcsIO`` builds its client and its retry for every call, through two functions of its
own that this module wraps (``transforms.beam_internals.gcs_client``), so that Beam's I/O

- connects anonymously with ``--no_auth`` or ``$STORAGE_EMULATOR_HOST`` (Beam looks up
  credentials regardless, with a backoff of about 20 s when there are none), and
- retries for as long as ``models.storage`` does (:class:`models.storage.Retries`, set from
  ``--storage_deadline``); its per-request timeout stays google-cloud-storage's 60 s.

Where the policy comes from, per process: the launcher sets it from the job's flags
(:func:`prepare`); a worker started by Beam's SDK harness (Dataflow, a container) gets the
job's options and imports this module as a ``--beam_plugins`` entry; a worker of an EXTERNAL
worker pool gets no options from Beam (``worker_pool_main`` starts ``SdkHarness`` bare), so it
imports this module with beamcap's transforms, keeps the defaults for Beam's reads and writes,
and takes the job's policy when the commit step runs (``transforms.commit.CommitRun``). Storage
faults are told in words by :func:`models.storage.in_words`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
)

from models import storage
from models.configs import SettingsError
from transforms.beam_internals import gcs_client

PLUGIN = __name__  # what --beam_plugins names, so that workers import this module too
_DEFAULTS = storage.Retries()


class StorageOptions(PipelineOptions):
    """How long a job waits for Cloud Storage, declared with Beam's own flags."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--storage_timeout",
            type=float,
            default=_DEFAULTS.timeout,
            help="seconds one Cloud Storage request of beamcap's own (leases, markers, the "
            "summary) may wait for an answer before it is retried",
        )
        parser.add_argument(
            "--storage_deadline",
            type=float,
            default=_DEFAULTS.deadline,
            help="seconds one Cloud Storage call may spend retrying, beamcap's and Beam's "
            "alike; past it the step, and so the run, fails in one line naming storage",
        )


_configured_from = [None]  # the options models.storage last took its policy from


def retries_of(options: PipelineOptions) -> storage.Retries:
    view = options.view_as(StorageOptions)
    return storage.Retries(timeout=view.storage_timeout, deadline=view.storage_deadline)


def no_auth(options: PipelineOptions) -> bool:
    return bool(options.view_as(GoogleCloudOptions).no_auth)


def anonymous(options: PipelineOptions) -> bool:
    """Whether the job connects without credentials: ``--no_auth``, or an emulator host."""
    return no_auth(options) or storage.EMULATOR_HOST in os.environ


def policy_of(options: PipelineOptions) -> Callable[[], None]:
    """The job's storage policy as a step carries it to its workers: calling it there sets
    ``models.storage``'s (a worker of an EXTERNAL pool has no other way to get it)."""
    return functools.partial(storage.configure, retries_of(options), anonymous=no_auth(options))


def configure(options: PipelineOptions) -> None:
    """Sets ``models.storage``'s policy and credentials from the job's options."""
    _configured_from[0] = options
    storage.configure(retries_of(options), anonymous=anonymous(options))


def prepare(beam_args: list[str]) -> list[str]:
    """A job's Beam flags with this module among its ``--beam_plugins``; this process's
    ``gs://`` access (Beam's, before the pipeline exists, and ``models.storage``'s) set from
    them."""
    args = [*beam_args, "--beam_plugins", PLUGIN]
    options = PipelineOptions(args)
    policy = retries_of(options)
    if policy.timeout <= 0 or policy.deadline < 0:
        raise SettingsError(
            f"--storage_timeout must be > 0 and --storage_deadline >= 0 (seconds), not "
            f"{policy.timeout:g} and {policy.deadline:g}"
        )
    FileSystems.set_options(options)
    configure(options)
    return args


def _is_beamcap_job(options: PipelineOptions) -> bool:
    return PLUGIN in (options.view_as(SetupOptions).beam_plugins or [])


def _storage_client(pipeline_options, use_credentials=True):
    fresh = pipeline_options is not _configured_from[0]  # a worker's first gs:// call of a job
    if fresh and _is_beamcap_job(pipeline_options):
        configure(pipeline_options)
    return gcs_client.beams_client(
        pipeline_options, use_credentials and not anonymous(pipeline_options)
    )


def _retry(pipeline_options):
    """Beam's retry, for models.storage's deadline (set from these options by
    ``_storage_client``, which GcsIO calls first; :func:`models.storage.one_try` shortens
    it)."""
    return gcs_client.beams_retry(pipeline_options).with_timeout(storage.retries().deadline)


gcs_client.route(_storage_client, _retry)
