"""Test harness only: lets google-cloud-storage's batch requests through to fake-gcs-server.

Where the two disagree (read in fake-gcs-server v1.56.1, ``fakestorage/server.go``,
``handleBatchCall``): the server skips every part of a ``/batch/storage/v1`` request that has
no ``Content-ID`` header ("missing content ID, skip") and answers an empty multipart body.
google-cloud-storage 3.x (``google/cloud/storage/batch.py``) sends its parts without one, which
Cloud Storage accepts (the header is optional in its batch documentation), so its parser finds
no part and raises ``ValueError: Bad response: not multi-part``. Beam's gcsio deletes and
renames by batch, so every sink finalize and clean-up fails against that server.

The work-around is on the client's side, in the open: each part gets a ``Content-ID``, as
Google's Java and Go clients send. Nothing of the server changes, least of all its
preconditions, which are what the tests check. The tests put this folder on ``PYTHONPATH`` of
the processes they start (Python imports ``sitecustomize`` at start-up) and import it
themselves; it acts only where ``$STORAGE_EMULATOR_HOST`` is set.
"""

import itertools
import os


def add_content_ids() -> None:
    from google.cloud.storage import batch

    if getattr(batch.MIMEApplicationHTTP, "_beamcap_content_id", False):
        return
    numbers = itertools.count(1)
    original = batch.MIMEApplicationHTTP.__init__

    def with_content_id(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self["Content-ID"] = f"<item{next(numbers)}>"

    batch.MIMEApplicationHTTP.__init__ = with_content_id
    batch.MIMEApplicationHTTP._beamcap_content_id = True


if os.environ.get("STORAGE_EMULATOR_HOST"):
    add_content_ids()
