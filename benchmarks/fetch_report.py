"""The report of ``bench_fetch.py``: one row per candidate from its rounds, the markdown tables
(main, per epoch, the grid), the checks against the targets and the chart (fetch.png)."""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

import common
from fetch_settings import (BATCH_SIZE, FAST, FLAT_RSS_MB, GRID_DECODE, GRID_IN_FLIGHT, IMAGE_SIZE,
                            NATIVE_TARGET_RATIO, SLOW, TARGET_RATIO, TARGET_RSS_MB, TARGET_VS_PEERS,
                            grid_options)


# -- summaries -------------------------------------------------------------------------------


def summarize(runs: List[dict]) -> dict:
    """One row from a candidate's rounds: best images/s, median tail, largest peak RSS."""
    ok = [r for r in runs if r["status"] == "ok" and r["epochs"]]
    first = runs[0]
    row = {"candidate": first["candidate"], "server": first["server"], "options": first["options"],
           "rounds": len(runs)}
    if not ok:
        return {**row, "status": first["status"], "reason": first.get("reason")}
    best = max(ok, key=lambda r: r["epochs"][0]["images_per_s"])
    return {**row, "status": "ok",
            "images_per_s": best["epochs"][0]["images_per_s"],
            "images_per_s_rounds": [r["epochs"][0]["images_per_s"] for r in ok],
            "images": best["epochs"][0]["images"],
            "complete": all(e["complete"] for e in best["epochs"]),
            "tail_s": common.median(r["epochs"][0]["tail_s"] for r in ok),
            "first_s": common.median(r["epochs"][0]["first_s"] for r in ok),
            "steady_images_per_s": _steady_rate(best["epochs"][0]),
            "peak_rss_mb": max(r["peak_rss_mb"] or 0 for r in ok),
            "rss_growth_mb": max((r["peak_rss_mb"] or 0) - (r["rss_before_mb"] or 0) for r in ok),
            "cpu_ms_per_image": 1000 * best["cpu_s"] / max(1, sum(e["images"] for e in best["epochs"])),
            "cores_busy": best["cpu_s"] / max(1e-9, sum(e["end_s"] or e["last_s"] or 0 for e in best["epochs"])),
            "server_cpu_s": best["server_cpu_s"],
            "epochs": best["epochs"],
            "epochs_by_round": [r["epochs"] for r in ok]}


def _steady_rate(epoch: dict) -> Optional[float]:
    """images/s from the first batch to the last: the rate without the epoch's start-up."""
    flowing = epoch["last_s"] - epoch["first_s"] if epoch["first_s"] is not None and epoch["last_s"] else 0
    return (epoch["images"] - BATCH_SIZE) / flowing if flowing > 0 and epoch["images"] > BATCH_SIZE else None


def main_table(rows: List[dict], ceiling: Optional[dict]) -> str:
    ceiling_ips = ceiling["images_per_s"] if ceiling else None
    ceiling_steady = ceiling.get("steady_images_per_s") if ceiling else None
    ceiling_rss = ceiling["peak_rss_mb"] if ceiling else None
    lines = []
    for row in rows:
        if row["status"] != "ok":
            continue
        ratio = row["images_per_s"] / ceiling_ips if ceiling_ips else None
        delta = row["peak_rss_mb"] - ceiling_rss if ceiling_rss is not None else None
        steady = row.get("steady_images_per_s")
        steady_ratio = steady / ceiling_steady if steady and ceiling_steady else None
        note = "" if row["complete"] else "cut by time cap"
        lines.append([row["candidate"], row["server"], f"{row['images']:,}", common.fmt(row["images_per_s"], 1),
                      common.fmt(ratio, 3, "×"), common.fmt(row["first_s"], 2), common.fmt(steady_ratio, 3, "×"),
                      common.fmt(row["tail_s"], 2),
                      common.fmt(row["peak_rss_mb"]), common.fmt(delta, 0, signed=True),
                      common.fmt(row["rss_growth_mb"], 0, signed=True), common.fmt(row["cpu_ms_per_image"], 2), note])
    columns = ["candidate", "server", "images", "images/s", "× ceiling", "1st batch s", "× after 1st batch", "tail s",
               "peak RSS MB", "RSS Δ vs ceiling MB", "RSS growth MB", "CPU ms/image", "note"]
    return common.markdown_table(columns, lines, align="llrrrrrrrrrrl")


def epochs_table(row: dict) -> str:
    lines = [[str(r + 1), str(i + 1), f"{e['images']:,}", common.fmt(e["images_per_s"], 1), common.fmt(e["tail_s"], 2),
              common.fmt(e["rss_peak_mb"]), common.fmt(e["rss_end_mb"])]
             for r, epochs in enumerate(row["epochs_by_round"]) for i, e in enumerate(epochs)]
    return common.markdown_table(["round", "epoch", "images", "images/s", "tail s", "peak RSS MB", "RSS at end MB"],
                                 lines)


def acceptance(rows: Dict[tuple, dict], ceiling: Optional[dict]) -> List[dict]:
    """Issue 3's targets, each with the measured value and whether it is met."""
    def ok_row(candidate, server):
        row = rows.get((candidate, server))
        return row if row is not None and row["status"] == "ok" else None

    checks = []
    tfeed_fast, tfeed_slow = ok_row("tfeed", FAST), ok_row("tfeed", SLOW)
    for server, row in ((FAST, tfeed_fast), (SLOW, tfeed_slow)):
        value = row["images_per_s"] / ceiling["images_per_s"] if row and ceiling else None
        checks.append({"target": f"tfeed >= {TARGET_RATIO}x ceiling @ {server}", "value": value,
                       "shown": common.fmt(value, 3, "×"), "met": value is not None and value >= TARGET_RATIO})
    peers = [ok_row(p, SLOW) for p in ("naive", "tutorial", "threadpool32", "tensorpack")]
    peers = [p for p in peers if p is not None]
    best_peer = max(peers, key=lambda p: p["images_per_s"]) if peers else None
    value = tfeed_slow["images_per_s"] / best_peer["images_per_s"] if tfeed_slow and best_peer else None
    checks.append({"target": f"tfeed >= {TARGET_VS_PEERS}x best peer @ {SLOW}", "value": value,
                   "shown": common.fmt(value, 2, "×") + (f" (best peer: {best_peer['candidate']})" if best_peer else ""),
                   "met": value is not None and value >= TARGET_VS_PEERS})
    value = tfeed_slow["peak_rss_mb"] - ceiling["peak_rss_mb"] if tfeed_slow and ceiling else None
    checks.append({"target": f"tfeed peak RSS @ {SLOW} within {TARGET_RSS_MB:.0f} MB of the ceiling's",
                   "value": value, "shown": common.fmt(value, 0, " MB"),
                   "met": value is not None and value <= TARGET_RSS_MB})
    rounds = [epochs for epochs in (tfeed_slow["epochs_by_round"] if tfeed_slow else []) if len(epochs) >= 2]
    if rounds:  # the worst round
        value = max(max(e["rss_peak_mb"] for e in epochs[1:]) - epochs[0]["rss_peak_mb"] for epochs in rounds)
        shown = f"{value:+.0f} MB over {len(rounds[0])} epochs (worst of {len(rounds)} round(s))"
    else:
        value, shown = None, "needs --epochs >= 2"
    checks.append({"target": f"tfeed RSS flat across epochs @ {SLOW} (later peaks <= epoch 1 + {FLAT_RSS_MB:.0f} MB)",
                   "value": value, "shown": shown, "met": value is not None and value <= FLAT_RSS_MB})
    return checks


def native_acceptance(rows: Dict[tuple, dict], ceiling: Optional[dict]) -> List[dict]:
    """Issue 6's target: the tfeed row (the native engine when it builds) at both latencies."""
    checks = []
    for server in (FAST, SLOW):
        row = rows.get(("tfeed", server))
        value = row["images_per_s"] / ceiling["images_per_s"] if row and row["status"] == "ok" and ceiling else None
        checks.append({"target": f"tfeed (native) >= {NATIVE_TARGET_RATIO}x ceiling @ {server}", "value": value,
                       "shown": common.fmt(value, 3, "×"), "met": value is not None and value >= NATIVE_TARGET_RATIO})
    return checks


def grid_table(rows: Dict[tuple, dict], ceiling: Optional[dict]) -> tuple:
    """(markdown, values) of images/s by max_in_flight (rows) x decode parallelism (columns)."""
    values = []
    for in_flight in GRID_IN_FLIGHT:
        line = []
        for calls in GRID_DECODE:
            row = rows.get(("tfeed", SLOW, _options_key(in_flight, calls)))
            line.append(row["images_per_s"] if row and row["status"] == "ok" else None)
        values.append(line)
    ceiling_ips = ceiling["images_per_s"] if ceiling else None
    lines = [[str(in_flight)] + [common.fmt(v, 0) + (f" ({v / ceiling_ips:.2f}×)" if v and ceiling_ips else "")
                                 for v in line] for in_flight, line in zip(GRID_IN_FLIGHT, values)]
    header = ["max_in_flight \\ decode calls"] + [str(c) for c in GRID_DECODE]
    return common.markdown_table(header, lines), values


def _options_key(in_flight, calls) -> str:
    return json.dumps(grid_options(in_flight, calls), sort_keys=True)


def chart(path: str, rows: Dict[tuple, dict], ceiling: Optional[dict], candidates: List[str]) -> None:
    groups = [c for c in candidates if c != "ceiling"]

    def values(server, field):
        return [rows[(c, server)][field] if rows.get((c, server), {}).get("status") == "ok" else None
                for c in groups]

    hlines = []
    if ceiling:
        hlines = [(ceiling["images_per_s"], f"ceiling {ceiling['images_per_s']:.0f}/s", "-"),
                  (TARGET_RATIO * ceiling["images_per_s"], f"{TARGET_RATIO}× ceiling", "--")]
    rss_lines = [(ceiling["peak_rss_mb"], f"ceiling {ceiling['peak_rss_mb']:.0f} MB", "-"),
                 (ceiling["peak_rss_mb"] + TARGET_RSS_MB, f"ceiling + {TARGET_RSS_MB:.0f} MB", "--")] if ceiling else []
    common.bar_chart(path, groups, {FAST: values(FAST, "images_per_s"), SLOW: values(SLOW, "images_per_s")},
                     title=f"images/s (log scale), {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} batch {BATCH_SIZE}, "
                           f"{os.cpu_count()} cores", ylabel="images/s", log=True, hlines=hlines,
                     panel={"series": {FAST: values(FAST, "peak_rss_mb"), SLOW: values(SLOW, "peak_rss_mb")},
                            "title": "peak RSS of the process (MB)", "ylabel": "MB", "hlines": rss_lines})
