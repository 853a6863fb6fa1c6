"""Facts about the machine a stage runs on."""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may run on: honours taskset and cpusets, not CFS quotas (k8s limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# Padded tokens per ONNX Runtime call (engine.engine.token_batches), for the service and the batch
# job alike; chosen with bench/engine.py on this machine (docs/benchmarks.md).
DEFAULT_BATCH_TOKENS = 512
