"""Shared fixtures. Tests run on Keras' TensorFlow backend unless a test starts a subprocess."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import socket  # noqa: E402

import pytest  # noqa: E402

from models import storage  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator():
    """An in-memory Cloud Storage emulator on loopback with bucket ``beamcap-test``.

    Yields a ``google.cloud.storage.Client`` with anonymous credentials (no auth retries).
    """
    from gcp_storage_emulator.server import create_server
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="beamcap-test")
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    client = gcs.Client(
        project="beamcap-test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
    )
    storage.use_gcs_client(client)
    try:
        yield client
    finally:
        storage.use_gcs_client(None)
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
        server.stop()
