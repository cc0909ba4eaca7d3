"""What ``bench_fetch.py`` measures and the targets it checks, shared by ``bench_fetch.py`` (the
command line), ``fetch_jobs.py`` (the measurements) and ``fetch_report.py`` (tables, checks, chart)."""

from __future__ import annotations

IMAGE_SIZE = (224, 224)
BATCH_SIZE = 32
PILOT_URLS = 64
LATENCY, JITTER = 0.100, 0.020
FAST, SLOW, MEMORY = "nginx 0 ms", "ImageServer 100±20 ms", "memory"
NETWORK_BOUND = 0.1  # below this fraction of the ceiling a candidate runs one round only
GRID_IN_FLIGHT = (16, 64, 256)
GRID_DECODE = (1, 2, "AUTOTUNE")
# Targets: tfeed against the decode ceiling and the best peer.
TARGET_RATIO, TARGET_VS_PEERS, TARGET_RSS_MB, FLAT_RSS_MB = 0.8, 3.0, 400.0, 50.0
# Issue 6's target for the native engine (tfeed's default where the op builds).
NATIVE_TARGET_RATIO = 0.9


def grid_options(in_flight, calls) -> dict:
    """The tfeed options of one cell of the ``--grid``."""
    return {"max_in_flight": in_flight, "num_parallel_calls": calls}
