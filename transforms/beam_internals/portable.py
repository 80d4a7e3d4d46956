"""A portable run (Flink, Spark, a job server) as beamcap watches it: the job id Beam's result
keeps private, and the SDK worker pool asked over Beam's Fn API gRPC services (what a runner
does when it needs a worker: ``StartWorker`` with a control endpoint, which the worker connects
back to, naming itself in the ``worker_id`` metadata).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from concurrent import futures


def job_id(result) -> str | None:
    """The job server's id of a portable run (Beam's invocation id, ``JOBNAME_UUID``); None for
    a result of another runner."""
    return getattr(result, "_job_id", None)


@contextlib.contextmanager
def _pool(address: str):
    """A client of the SDK worker pool at ``address``."""
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc

    channel = grpc.insecure_channel(address)
    try:
        yield beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel)
    finally:
        channel.close()


def _rpc_fault(address: str, error, waited: float) -> str:
    import grpc

    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"the SDK worker pool at {address} did not answer within {waited:.0f} s"
    return f"the SDK worker pool at {address} is not reachable ({error.code().name.lower()})"


@contextlib.contextmanager
def _control_server(worker_id: str):
    """A BeamFnControl server on a free local port that gives no work; yields (its address, an
    event set once the worker ``worker_id`` connects)."""
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc

    connected = threading.Event()

    class Control(beam_fn_api_pb2_grpc.BeamFnControlServicer):
        def Control(self, requests, context):  # noqa: N802 - gRPC's name
            if dict(context.invocation_metadata()).get("worker_id") == worker_id:
                connected.set()
            return iter(())  # no work: the probe worker's stream ends

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    beam_fn_api_pb2_grpc.add_BeamFnControlServicer_to_server(Control(), server)
    port = server.add_insecure_port("localhost:0")
    server.start()
    try:
        yield f"localhost:{port}", connected
    finally:
        server.stop(0)


def probe_pool(address: str, timeout: float) -> str | None:
    """Asks the pool at ``address`` for a worker that connects back to a control server here,
    then stops it; what failed, in one line naming the pool, or None."""
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2, endpoints_pb2

    worker_id, started = f"beamcap-probe-{secrets.token_hex(4)}", time.time()
    with _control_server(worker_id) as (control, connected), _pool(address) as pool:
        endpoint = endpoints_pb2.ApiServiceDescriptor(url=control)
        request = beam_fn_api_pb2.StartWorkerRequest(worker_id=worker_id, control_endpoint=endpoint)
        try:
            answer = pool.StartWorker(request, timeout=timeout)
        except grpc.RpcError as error:
            return _rpc_fault(address, error, timeout)
        try:
            return _worker_fault(address, answer.error, connected, timeout, started)
        finally:
            with contextlib.suppress(grpc.RpcError):
                pool.StopWorker(beam_fn_api_pb2.StopWorkerRequest(worker_id=worker_id), timeout=5)


def _worker_fault(address: str, error: str, connected, timeout: float, started: float):
    """Why the worker the pool was asked for did not connect in time, or None."""
    if error:
        last = error.strip().splitlines()[-1]
        return f"the SDK worker pool at {address} cannot start a worker: {last}"
    if not connected.wait(max(timeout - (time.time() - started), 1)):
        return (
            f"the SDK worker pool at {address} did not start a worker within {timeout:.0f} s "
            "(can its `python` import apache_beam? see the pool's log)"
        )
    took = time.time() - started
    logging.info("SDK worker pool at %s: a worker started in %.1f s", address, took)
    return None


def pool_answers(address: str) -> bool:
    """A cheap liveness ask: stopping a worker the pool never had is a no-op that it answers."""
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2

    with _pool(address) as pool:
        try:
            pool.StopWorker(beam_fn_api_pb2.StopWorkerRequest(worker_id="beamcap-ping"), timeout=5)
            return True
        except grpc.RpcError:
            return False
