"""RunInference's metrics of a finished run (namespace ``beamcap``), read through Beam's
metrics API and logged by the caption launcher."""

from __future__ import annotations

import logging

from transforms.inference import METRICS_NAMESPACE


def inference_metrics(result) -> dict:
    """Counters as numbers, distributions as {count, mean, max}; empty where the runner
    reports none."""
    from apache_beam.metrics.metric import MetricsFilter

    found = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    metrics = {c.key.metric.name: c.committed or c.attempted for c in found["counters"]}
    for distribution in found["distributions"]:
        value = distribution.committed or distribution.attempted
        if value and value.count:
            metrics[distribution.key.metric.name] = {
                "count": value.count,
                "mean": value.mean,
                "max": value.max,
            }
    return metrics


def log_inference(result) -> None:
    """One log line: the batches and model loads of a finished run, where the runner says."""
    metrics = inference_metrics(result)
    if "inference_batch_latency_micro_secs" not in metrics:
        return
    batches = metrics["inference_batch_latency_micro_secs"]
    load = metrics.get("load_model_latency_milli_secs", {})
    logging.info(
        "inference: %d batches, mean %.2f s per batch; %d model loads, mean %.1f s",
        batches["count"],
        batches["mean"] / 1e6,
        load.get("count", 0),
        load.get("mean", 0) / 1e3,
    )
