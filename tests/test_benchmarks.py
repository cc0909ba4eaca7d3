"""Smoke tests of the benchmarks: tiny runs of bench_fetch.py (every row, JSON and PNGs) and
bench_hanging.py, and the shared helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from helpers import nginx_origin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks", "bench_fetch.py")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SERVERS = ("nginx 0 ms", "ImageServer 100±20 ms")
FETCHERS = ("naive", "tutorial", "threadpool32", "tensorpack", "tfeed", "tfeed-python", "tfeed-fixed")


@pytest.mark.timeout(240)
def test_quick_run_writes_every_row(tmp_path):
    nginx_origin()
    pytest.importorskip("skimage")
    pytest.importorskip("matplotlib")
    # ~30 s on an idle 2-core machine, ~50 s when it is busy.
    command = [sys.executable, BENCH, "--images", "40", "--epochs", "2", "--quick", "--grid", "--budget", "2",
               "--pilot", "0.5", "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=230, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]

    data = json.loads((tmp_path / "fetch.json").read_text())
    rows = {(row["candidate"], row["server"]): row for row in data["rows"]}
    expected = [("ceiling", "memory")] + [(name, server) for server in SERVERS for name in FETCHERS]
    assert set(expected) <= set(rows), sorted(rows)
    for key in expected:
        row = rows[key]
        if key[0] == "tensorpack" and row["status"] == "unavailable":
            assert row["reason"]  # an optional package: said why, not silently dropped
            continue
        assert row["status"] == "ok", row
        assert row["images"] > 0 and row["images_per_s"] > 0 and row["peak_rss_mb"] > 0
        assert row["complete"], row  # a tiny run finishes every candidate, so each has a tail
        assert row["tail_s"] is not None and row["tail_s"] >= 0
        # the rate after the first batch leaves the start-up out: never below the whole epoch's
        # (minus rounding); None only when the first batch was the whole run
        steady = row["steady_images_per_s"]
        assert steady is None if row["images"] <= 32 else steady >= 0.99 * row["images_per_s"] * (1 - 32 / row["images"])
    assert any(note.startswith("tfeed row: fetch engine") for note in data["notes"])
    assert len(rows[("tfeed", SERVERS[1])]["epochs"]) == 2
    assert {check["target"].split(" ")[0] for check in data["acceptance"]} == {"tfeed"}
    native = any(note.endswith("native (libcurl op)") for note in data["notes"])
    assert [check["target"] for check in data["acceptance_native"]] == (
        [f"tfeed (native) >= 0.9x ceiling @ {server}" for server in SERVERS] if native else [])
    assert len(data["grid"]["images_per_s"]) == 3 and all(len(line) == 3 for line in data["grid"]["images_per_s"])

    for name in ("fetch.png", "fetch_grid.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
    assert "| candidate" in done.stdout and "× ceiling" in done.stdout


def test_time_iteration_reports_the_tail():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import common

    def slow_end():
        yield [1, 2]
        yield [3]
        time.sleep(0.2)

    timing = common.time_iteration(slow_end(), len, time_cap=10)
    assert timing["images"] == 3 and not timing["cut"]
    assert timing["tail_s"] >= 0.19
    assert timing["images_per_s_with_tail"] < timing["images_per_s"]

    capped = common.time_iteration(iter(lambda: [0], None), len, time_cap=0.05)
    assert capped["cut"] and capped["tail_s"] is None and capped["images"] > 0


def test_markdown_table_aligns_columns():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import common

    table = common.markdown_table(["name", "value"], [["a", "1"], ["long name", None]]).splitlines()
    assert table[0] == "| name      | value |"
    assert table[1] == "|-----------|------:|"
    assert table[3] == "| long name |       |"


@pytest.mark.timeout(200)
def test_hanging_benchmark_counts_every_url_on_every_engine(tmp_path):
    pytest.importorskip("skimage")
    out = tmp_path / "hanging.json"
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "bench_hanging.py"), "--images", "60",
               "--hanging", "0.1", "--read-timeout", "1", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=190, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(out.read_text())
    assert 0 < data["hanging"] < 60
    for name, row in data["rows"].items():
        # every good URL once, every hanging one a timeout, the epoch no shorter than the timeout
        assert row["images"] == 60 - data["hanging"], name
        assert row["failures"] == {"timeout": data["hanging"]}, name
        assert row["end_s"] >= 1.0, name
    assert "| native" in done.stdout
