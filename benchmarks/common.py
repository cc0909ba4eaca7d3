"""Helpers shared by tfeed's benchmark scripts: memory, timing, workers and output.

Nothing here imports TensorFlow or tfeed, so a parent process that only runs
servers and workers stays light.  Pieces:

* memory: :func:`rss_mb`, :func:`peak_rss_mb`, :func:`reset_peak_rss` (Linux
  ``/proc/self``) and :class:`RssSampler`, a thread that records the peak per
  phase (e.g. per epoch);
* timing: :func:`time_iteration` runs an iterator to its end (or a time cap)
  and reports images/s, time to the first and last element, and the *tail*:
  the time from the last element to end-of-sequence;
* workers: :func:`run_worker` runs one measurement in a fresh Python process
  (so peak RSS belongs to one candidate) and returns its JSON result;
  :func:`start_service` and :func:`add_service_workers` start ``tfeed
  service`` dispatchers and workers;
* output: :func:`markdown_table`, :func:`write_json`, :func:`bar_chart`,
  :func:`heatmap` (matplotlib, Agg backend), :func:`machine_info`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

# -- memory ------------------------------------------------------------------


def _status_kb(field: str, pid: str = "self") -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> Optional[float]:
    """Resident memory of this process now, in MiB (None off Linux)."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


def peak_rss_mb() -> Optional[float]:
    """Peak resident memory (VmHWM) since start or the last :func:`reset_peak_rss`."""
    kb = _status_kb("VmHWM")
    return None if kb is None else kb / 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples RSS every ``interval`` seconds in a daemon thread.

    ``phase()`` closes the current phase and returns its peak (MiB): the
    largest of the samples taken during it and the RSS at its start and end,
    so short phases are still covered.  Use as a context manager.
    """

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self._lock = threading.Lock()
        self._peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def __enter__(self) -> "RssSampler":
        self._peak = rss_mb() or 0.0
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            now = rss_mb() or 0.0
            with self._lock:
                self._peak = max(self._peak, now)

    def phase(self) -> float:
        """Peak RSS since the previous call (or the start), then start anew."""
        now = rss_mb() or 0.0
        with self._lock:
            peak, self._peak = max(self._peak, now), now
        return peak


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all threads)."""
    times = os.times()
    return times.user + times.system


# -- timing ------------------------------------------------------------------


def time_iteration(iterable: Iterable, count: Callable[[object], int], time_cap: float) -> dict:
    """Iterate over ``iterable`` until it ends or ``time_cap`` seconds pass.

    ``count(element)`` says how many images an element holds.  Returns
    ``images``, ``first_s`` / ``last_s`` (time to the first / last element),
    ``end_s`` (time to end-of-sequence), ``tail_s`` (``end_s - last_s``),
    ``images_per_s`` (images / ``last_s``: the rate while elements flow),
    ``images_per_s_with_tail`` (images / ``end_s``) and ``cut`` (True when the
    cap stopped it; then there is no end and no tail).  The clock starts
    before ``iter(iterable)``: creating a tf.data iterator starts its work.
    """
    images, first, last = 0, None, None
    start = time.perf_counter()
    iterator = iter(iterable)
    cut = False
    while True:
        try:
            element = next(iterator)
        except StopIteration:
            break
        now = time.perf_counter() - start
        images += count(element)
        first = now if first is None else first
        last = now
        if now > time_cap:
            cut = True
            break
    end = None if cut else time.perf_counter() - start
    return {
        "images": images,
        "first_s": first,
        "last_s": last,
        "end_s": end,
        "tail_s": None if end is None or last is None else end - last,
        "images_per_s": images / last if last else 0.0,
        "images_per_s_with_tail": images / end if end else None,
        "cut": cut,
    }


# -- workers -----------------------------------------------------------------


class WorkerError(RuntimeError):
    """A worker process failed; the message ends with its stderr."""


def thread_sessions() -> Callable:
    """A function returning the calling thread's own ``requests.Session`` (keep-alive per thread)."""
    import requests

    local = threading.local()

    def session():
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session

    return session


def split_cores() -> Optional[List[int]]:
    """Give core 0 to this process (and the servers it starts from now on) and return the
    other cores, for the clients measured: as if the origin were another machine, the
    server does not compete with the client for CPU.  None (nothing pinned) on one core."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    os.sched_setaffinity(0, {cpus[0]})
    return cpus[1:]


def run_worker(argv: Sequence[str], job: dict, timeout: float, env: Optional[Dict[str, str]] = None,
               cpus: Optional[List[int]] = None) -> dict:
    """Run ``[sys.executable, *argv, --job IN, --result OUT]`` in a fresh process
    (on ``cpus`` only, when given).

    ``job`` is written as JSON to IN; the worker writes its result JSON to OUT.
    Raises :class:`WorkerError` (with the end of stderr) when the worker
    fails, times out or writes no result.
    """
    with tempfile.TemporaryDirectory(prefix="tfeed-bench-") as tmp:
        job_path, result_path, log_path = (os.path.join(tmp, name) for name in ("job.json", "result.json", "log"))
        with open(job_path, "w") as handle:
            json.dump(job, handle)
        command = [sys.executable, *argv, "--job", job_path, "--result", result_path]
        with open(log_path, "wb") as log:
            try:
                pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
                code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      timeout=timeout, env=env, preexec_fn=pin).returncode
            except subprocess.TimeoutExpired:
                code = "timeout"
        if code == 0 and os.path.exists(result_path):
            with open(result_path) as handle:
                return json.load(handle)
        with open(log_path, errors="replace") as handle:
            lines = [line for line in handle.read().splitlines() if not _is_tf_noise(line)]
        raise WorkerError(f"worker exited with {code}:\n" + "\n".join(lines[-25:]))


def start_service(*args: str):
    """``python -m tfeed service ARGS`` as a process; returns ``(process, address)``,
    the address being the first line it prints (``grpc://host:port`` once it serves)."""
    proc = subprocess.Popen([sys.executable, "-m", "tfeed", "service", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    return proc, proc.stdout.readline().strip()


def add_service_workers(dispatcher: str, procs: list, count: int, pin: bool = False) -> List[str]:
    """Start ``tfeed service worker`` processes for ``dispatcher`` until ``procs``
    (the dispatcher first, then its workers) holds ``count`` workers; the new
    workers' ports.  ``pin``: worker ``k`` runs on core ``k % cores`` only."""
    ports = []
    while len(procs) - 1 < count:
        worker, address = start_service("worker", "--dispatcher", dispatcher)
        if pin:
            os.sched_setaffinity(worker.pid, {(len(procs) - 1) % os.cpu_count()})
        procs.append(worker)
        ports.append(address.rsplit(":", 1)[1])
    return ports


def _is_tf_noise(line: str) -> bool:
    return line.startswith(("I0000", "W0000", "WARNING: All log messages", "To enable the following"))


def median(values: Iterable[Optional[float]]) -> Optional[float]:
    """Median of the values that are not None (None if there are none)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


# -- output ------------------------------------------------------------------


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence], align: Optional[str] = None) -> str:
    """A GitHub markdown table; ``align`` is one letter per column (l/r)."""
    rows = [["" if cell is None else str(cell) for cell in row] for row in rows]
    align = align or "l" + "r" * (len(columns) - 1)
    widths = [max([len(columns[i])] + [len(row[i]) for row in rows]) for i in range(len(columns))]

    def line(cells):
        padded = [cell.ljust(w) if a == "l" else cell.rjust(w) for cell, w, a in zip(cells, widths, align)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2)) for w, a in zip(widths, align)) + "|"
    return "\n".join([line(columns), rule, *(line(row) for row in rows)])


def fmt(value: Optional[float], digits: int = 0, suffix: str = "", signed: bool = False) -> str:
    """A number for a table: ``digits`` decimals, thousands separators, a sign
    when ``signed``, "—" for None."""
    if value is None:
        return "—"
    return f"{value:{'+' if signed else ''},.{digits}f}{suffix}"


def write_json(path: str, data) -> None:
    """Write ``data`` as indented JSON, creating the directory."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")


def machine_info() -> dict:
    """What the numbers were measured on."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_at_start": load, "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(path: str, groups: Sequence[str], series: Dict[str, Sequence[Optional[float]]], *, title: str,
              ylabel: str, log: bool = False, hlines: Sequence[tuple] = (), labels_fmt: str = "{:.0f}",
              panel: Optional[dict] = None) -> None:
    """Grouped bars: one group per entry of ``groups``, one bar per series.

    ``series`` maps a legend name to one value per group (None: no bar);
    ``hlines`` are ``(y, label, style)`` reference lines; ``panel`` optionally
    adds a second chart below with the same arguments (``series``, ``title``,
    ``ylabel``, ``log``, ``hlines``, ``labels_fmt``).
    """
    plt = _pyplot()
    panels = [dict(series=series, title=title, ylabel=ylabel, log=log, hlines=hlines, labels_fmt=labels_fmt)]
    if panel is not None:
        panels.append({"log": False, "hlines": (), "labels_fmt": "{:.0f}", **panel})
    figure, axes = plt.subplots(len(panels), 1, figsize=(max(8.0, 1.2 * len(groups) + 3), 4.2 * len(panels)),
                                squeeze=False)
    for ax, spec in zip(axes[:, 0], panels):
        _draw_bars(ax, groups, spec)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _draw_bars(ax, groups, spec) -> None:
    names = list(spec["series"])
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        values = spec["series"][name]
        xs = [g + (i - (len(names) - 1) / 2) * width for g in range(len(groups))]
        heights = [v if v is not None else 0 for v in values]
        bars = ax.bar(xs, heights, width, label=name)
        for bar, value in zip(bars, values):
            if value is not None:
                ax.annotate(spec["labels_fmt"].format(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points")
    for y, label, style in spec["hlines"]:
        ax.axhline(y, linestyle=style, color="grey", linewidth=1)
        ax.annotate(label, (len(groups) - 0.5, y), ha="right", va="bottom", fontsize=7, color="dimgrey")
    if spec["log"]:
        ax.set_yscale("log")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel(spec["ylabel"])
    ax.set_title(spec["title"], fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def heatmap(path: str, rows: Sequence[str], columns: Sequence[str], values: List[List[Optional[float]]], *,
            title: str, xlabel: str, ylabel: str, cell_fmt: str = "{:.0f}") -> None:
    """A table of numbers as a coloured grid (None cells left blank)."""
    plt = _pyplot()
    import numpy as np

    grid = np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)
    figure, ax = plt.subplots(figsize=(1.6 * len(columns) + 2.5, 0.9 * len(rows) + 1.8))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    finite = grid[np.isfinite(grid)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0
    for r in range(len(rows)):
        for c in range(len(columns)):
            if np.isfinite(grid[r, c]):
                ax.text(c, r, cell_fmt.format(grid[r, c]), ha="center", va="center",
                        color="black" if grid[r, c] > middle else "white")
    figure.colorbar(image, ax=ax)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
