"""A real Cloud Storage server for the tests, behind a real network proxy.

fake-gcs-server (Go, in memory) serves the JSON API; Toxiproxy sits between it and every
client, and the tests inject network faults (latency, resets, a black hole, an outage) through
Toxiproxy's HTTP API. Both are built by ``make gcs-servers`` into ``build/bin/``. The server's
``-external-url`` is the proxy's address: it writes that URL into each object's mediaLink, and
downloads that follow it go through the proxy too.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
FAKE_GCS = ROOT / "build" / "bin" / "fake-gcs-server"
TOXIPROXY = ROOT / "build" / "bin" / "toxiproxy-server"
COMPAT = ROOT / "tests" / "gcs_compat"  # sitecustomize: Content-IDs on batch parts


def _wait_for_port(port: int, process: subprocess.Popen, name: str) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on port {port} within 30 s")


class Toxiproxy:
    """Toxiproxy's HTTP API, for one proxy named ``gcs``."""

    def __init__(self, api: str, proxy: str = "gcs"):
        self.api, self.proxy = api, proxy

    def _call(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.api}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else None

    def create(self, listen: str, upstream: str) -> None:
        self._call("POST", "/proxies", {"name": self.proxy, "listen": listen, "upstream": upstream})

    def set_enabled(self, enabled: bool) -> None:
        """Disabled: the proxy stops listening and drops its connections (storage gone)."""
        self._call("POST", f"/proxies/{self.proxy}", {"enabled": enabled})

    def add(self, kind: str, *, stream: str = "downstream", **attributes) -> str:
        name = f"{kind}_{stream}"
        body = {"name": name, "type": kind, "stream": stream, "attributes": attributes}
        self._call("POST", f"/proxies/{self.proxy}/toxics", body)
        return name

    def remove(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{self.proxy}/toxics/{name}")

    @contextlib.contextmanager
    def toxic(self, kind: str, *, stream: str = "downstream", **attributes):
        name = self.add(kind, stream=stream, **attributes)
        try:
            yield name
        finally:
            self.remove(name)

    def reset(self) -> None:
        """Every toxic removed and the proxy enabled: the state each test starts from."""
        self._call("POST", "/reset")


class GcsServers:
    """fake-gcs-server on ``server_port`` behind Toxiproxy's proxy on ``proxy_port``.
    ``endpoint`` (through the proxy) is what ``$STORAGE_EMULATOR_HOST`` names; ``direct`` goes
    around the proxy, for a test's own checks while a fault is on."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.server_port, self.proxy_port, self.api_port = free_port(), free_port(), free_port()
        self.endpoint = f"http://127.0.0.1:{self.proxy_port}"
        self.direct = f"http://127.0.0.1:{self.server_port}"
        self.toxiproxy = Toxiproxy(f"http://127.0.0.1:{self.api_port}")
        self.processes: list[subprocess.Popen] = []

    def _start(self, name: str, command: list[str], port: int) -> None:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - open while it runs
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        _wait_for_port(port, process, name)

    def start(self) -> GcsServers:
        for binary in (FAKE_GCS, TOXIPROXY):
            if not binary.exists():
                raise FileNotFoundError(f"{binary} is missing: run `make gcs-servers`")
        self._start(
            "toxiproxy",
            [str(TOXIPROXY), "-host", "127.0.0.1", "-port", str(self.api_port)],
            self.api_port,
        )
        self._start(
            "fake-gcs-server",
            [
                *(str(FAKE_GCS), "-backend", "memory", "-scheme", "http", "-host", "127.0.0.1"),
                *("-port", str(self.server_port), "-external-url", self.endpoint),
                *("-log-level", "info"),  # a line per request answered: requests_answered
            ],
            self.server_port,
        )
        self.toxiproxy.create(f"127.0.0.1:{self.proxy_port}", f"127.0.0.1:{self.server_port}")
        return self

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()

    def requests_answered(self) -> int:
        """How many requests fake-gcs-server has answered so far (its log has a line each)."""
        log = (self.log_dir / "fake-gcs-server.log").read_text(errors="replace")
        return log.count(' HTTP/1.1\\" ')

    def downloads(self, uri: str) -> int:
        """How many times fake-gcs-server has served the bytes of the object ``gs://B/NAME``."""
        bucket, name = uri[len("gs://") :].split("/", 1)
        log = (self.log_dir / "fake-gcs-server.log").read_text(errors="replace")
        return log.count(f"/b/{bucket}/o/{urllib.parse.quote(name, safe='')}?alt=media ")

    def client(self, *, direct: bool = False):
        """A google-cloud-storage client, anonymous, through the proxy (or around it)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage as gcs

        return gcs.Client(
            project="beamcap-test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.direct if direct else self.endpoint},
        )

    def env(self) -> dict[str, str]:
        """What a process needs to use these servers: the emulator host and the harness's
        batch work-around (:mod:`tests.gcs_compat.sitecustomize`) on its path."""
        path = os.environ.get("PYTHONPATH")
        return {
            "STORAGE_EMULATOR_HOST": self.endpoint,
            "PYTHONPATH": os.pathsep.join([str(COMPAT), str(ROOT), *([path] if path else [])]),
        }
