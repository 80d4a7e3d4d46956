"""What a runner hands back when a job fails, as the run's one line: typed where the error is
typed (a beamcap fault, a job server lost), read from text only where a portable runner hands
back a string (:func:`reason_of`, the one place that reads one)."""

from __future__ import annotations

import logging
import re
import threading

from models import storage
from models.faults import BeamcapError, JobServerLost
from pipeline import cluster_health

_WHILE_RUNNING = re.compile(r"\s*\[while running '[^']*'\]")


def _fault_names(root: type = BeamcapError) -> list[str]:
    return [root.__name__] + [name for sub in root.__subclasses__() for name in _fault_names(sub)]


# A worker's fault as a portable runner relays it: "... RunFault: REASON" (any of beamcap's).
_RELAYED = re.compile(rf"\b(?:{'|'.join(_fault_names())}): (.+)")


def _one_line(text: str) -> str:
    return _WHILE_RUNNING.sub("", (text.strip().splitlines() or [""])[0]).strip()[:500]


def reason_of(
    error: BaseException,
    cluster: cluster_health.Cluster | None = None,
    *,
    besides: BaseException | None = None,
) -> str:
    """One line for a failed pipeline: a beamcap fault's own message; else the worker's fault
    that the runner's text relays; else the error's type and first line, with a Java job
    server's class names (``cluster_health.in_words``) and a storage fault
    (``models.storage.in_words``, leaving out ``besides``, a fault handled meanwhile) put in
    words; never the runner's "[while running 'STEP']"."""
    if isinstance(error, BeamcapError):
        return _one_line(str(error))
    text = str(error).strip()
    relayed = _RELAYED.search(text)
    reason = relayed.group(1) if relayed else f"{type(error).__name__}: {_one_line(text)}"
    reason = cluster_health.in_words(cluster, _one_line(reason))
    return storage.in_words(reason, error, besides=besides)


def wait_until_finish(result, endpoint: str | None):
    """``result.wait_until_finish()``; a job server that stops answering meanwhile (its stream
    breaks: killed, its machine gone) raises :class:`JobServerLost` naming ``endpoint``."""
    import grpc

    _quiet_rpc_thread_deaths()  # Beam's stream threads die of it too: the run says it once
    try:
        return result.wait_until_finish()
    except grpc.RpcError as error:
        code = error.code().name.lower() if hasattr(error, "code") else "no answer"
        where = f"at {endpoint}" if endpoint else "of the runner"
        raise JobServerLost(
            f"the job server {where} stopped answering mid-run ({code}); nothing was "
            "committed: run again (--only-new takes up what is left)"
        ) from error


# A loopback worker's data plane logs, rather than raises, the gRPC error of a stream gone.
RPC_LOGGERS = ("apache_beam.runners.worker.data_plane",)


def _quiet_rpc_thread_deaths() -> None:
    """From now on in this process, a thread that dies of a gRPC error (Beam's job-message
    reader, a loopback worker's control and data streams: a job server gone), or a record of
    one logged by ``RPC_LOGGERS``, is logged at debug level instead of printing a traceback
    around the run's one line."""
    import grpc

    earlier = threading.excepthook
    if getattr(earlier, "quiets_rpc", False):
        return

    def at_debug(record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], grpc.RpcError):
            logging.debug("%s: %s", record.name, record.getMessage(), exc_info=record.exc_info)
            return False
        return True

    for name in RPC_LOGGERS:
        logging.getLogger(name).addFilter(at_debug)

    def hook(args) -> None:
        if isinstance(args.exc_value, grpc.RpcError):
            name = args.thread.name if args.thread else "?"
            logging.debug("thread %s ended: %s", name, args.exc_value, exc_info=args.exc_value)
        else:
            earlier(args)

    hook.quiets_rpc = True
    threading.excepthook = hook
