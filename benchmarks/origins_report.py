"""The report of ``bench_origins.py``: the candidates, one row per (origin, candidate) from its
rounds, the per-origin summary (best peer, tfeed's ratios to it, to the origin's capacity and to
the decode ceiling), the markdown tables and the chart (origins.png)."""

from __future__ import annotations

import os

import common

CEILING = "decode ceiling"  # tfeed's decode + resize of the same files from memory: the CPU's limit
CANDIDATES = ("sequential", "threads32", "tensorpack", "tfeed", "tfeed python", "tfeed fixed windows", CEILING)
PEERS = CANDIDATES[:3]
TFEED = CANDIDATES[3:6]


def summarize(runs: list) -> dict:
    """The best round (images/s) of one (origin, candidate), with every round's rate."""
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        return runs[0]
    best = max(ok, key=lambda r: r["images_per_s"])
    return {**best, "rounds": len(runs), "images_per_s_rounds": [r["images_per_s"] for r in ok]}


def origin_summary(key: str, info: dict, rows: dict, candidates: list) -> dict:
    """Best peer, tfeed's ratios and coverage of what peers delivered, for one origin."""
    peers = [rows[(key, c)] for c in candidates if c in PEERS and rows.get((key, c), {}).get("status") == "ok"]
    # the best peer is the fastest of those that delivered the most images: giving up on
    # URLs is not doing the task faster
    most = max((r["delivered"] for r in peers), default=0)
    best = max((r for r in peers if r["delivered"] == most), key=lambda r: r["images_per_s"], default=None)
    peer_ids = set().union(*(set(r["delivered_ids"]) for r in peers)) if peers else set()
    ceiling = rows.get((key, CEILING), {}).get("images_per_s")
    out = {"origin": key, "describe": info["describe"], "capacity": info["capacity"], "ceiling": ceiling,
           "best_peer": best["candidate"] if best else None, "best_peer_images_per_s": best["images_per_s"] if best else None,
           "best_peer_delivered": best["delivered"] if best else None}
    for name in TFEED:
        row = rows.get((key, name))
        if not row or row["status"] != "ok":
            continue
        rate = row["images_per_s"]
        out[name] = {"images_per_s": rate, "delivered": row["delivered"], "total": row["total"],
                     "x_best_peer": rate / best["images_per_s"] if best and best["images_per_s"] else None,
                     "x_capacity": rate / info["capacity"] if info["capacity"] else None,
                     "x_ceiling": rate / ceiling if ceiling else None,
                     "missing_vs_peers": len(peer_ids - set(row["delivered_ids"]))}
    return out


def report(rows: dict, summaries: list, origins: dict, candidates: list, args, info: dict) -> str:
    lines = []
    for key in origins:
        for candidate in candidates:
            row = rows.get((key, candidate))
            if row is None:
                continue
            if row["status"] != "ok":
                lines.append([key, candidate, "", "", "", row["status"], "", str(row.get("reason"))[:80]])
                continue
            seen = row["origin_seen"]
            codes = ", ".join(f"{k} {v}" for k, v in sorted(seen["by_status"].items()))
            lines.append([key, candidate, f"{row['delivered']}/{row['total']}", common.fmt(row["images_per_s"], 1),
                          common.fmt(row["wall_s"], 1) + (" (cut)" if row["cut"] else ""),
                          ", ".join(f"{k} {v}" for k, v in sorted(row["failures"].items())) or "—",
                          common.fmt(seen["requests"] / max(1, _all_delivered(row)), 2), codes])
    main = common.markdown_table(["origin", "candidate", "delivered", "images/s", "wall s", "failures",
                                  "origin requests/image", "origin saw"], lines, align="llrrrlrl")
    per_origin, shown = [], [name for name in TFEED if name in candidates]
    for s in summaries:
        total = origins[s["origin"]]["images"]
        cells = [s["origin"], common.fmt(s["capacity"]), common.fmt(s["ceiling"], 1), s["best_peer"] or "—",
                 f"{common.fmt(s['best_peer_images_per_s'], 1)} ({s['best_peer_delivered']}/{total})"]
        for name in shown:
            t = s.get(name)
            cells += ([f"{common.fmt(t['images_per_s'], 1)} ({t['delivered']}/{t['total']})",
                       common.fmt(t["x_best_peer"], 2, "×"),
                       common.fmt(t["x_capacity"], 2, "×"), common.fmt(t["x_ceiling"], 2, "×"),
                       "yes" if t["missing_vs_peers"] == 0 else f"no ({t['missing_vs_peers']} missing)"]
                      if t else ["—"] * 5)
        per_origin.append(cells)
    header = ["origin", "capacity/s", "ceiling/s", "best peer", "peer/s (delivered)"]
    for name in shown:
        short = {"tfeed": "tfeed", "tfeed python": "python"}.get(name, "fixed")
        header += [f"{short}/s (delivered)", f"{short} × peer", f"{short} × capacity", f"{short} × ceiling",
                   f"{short} has all peer images"]
    table2 = common.markdown_table(header, per_origin, align="lrrlr" + "rrrrl" * len(shown))
    later = _later_epochs(rows, origins, candidates) if args.epochs > 1 else []
    described = "\n".join(f"- `{k}`: {v['describe']}; {v['images']} images; capacity "
                          f"{common.fmt(v['capacity'])} images/s" for k, v in origins.items())
    return "\n".join([
        f"## Origin zoo: {info['cpus']} cores, {args.image_size[0]}x{args.image_size[1]}, batch {args.batch_size}, "
        f"best of {args.rounds} round(s), time cap {args.time_cap:g} s, isolation {args.isolation}"
        + (f", origins on core 0, clients on cores {sorted(args.client_cpus)}" if args.client_cpus else ""), "",
        described, "", main, "", "### Per origin", "", table2, *later])


def _all_delivered(row: dict) -> int:
    """Images delivered over all the epochs of a run (the origin's counts cover them all)."""
    return row["delivered"] + sum(e["delivered"] for e in row.get("later_epochs", []))


def _later_epochs(rows: dict, origins: dict, candidates: list) -> list:
    """Lines of a table: the last epoch's images/s of each candidate (same process, same dataset:
    tfeed starts it with what it learned of the host), and tfeed's ratio to the best complete peer."""
    shown = [c for c in candidates if c != CEILING]
    lines = []
    for key in origins:
        last = {c: rows[(key, c)]["later_epochs"][-1] for c in shown
                if rows.get((key, c), {}).get("status") == "ok" and rows[(key, c)].get("later_epochs")}
        peers = [last[c] for c in PEERS if c in last]
        most = max((e["delivered"] for e in peers), default=0)
        best = max((e["images_per_s"] for e in peers if e["delivered"] == most), default=None)
        cells = [key] + [f"{common.fmt(last[c]['images_per_s'], 1)} ({last[c]['delivered']})" if c in last else "—"
                         for c in shown]
        ratio = last.get("tfeed", {}).get("images_per_s")
        lines.append(cells + [common.fmt(ratio / best, 2, "×") if ratio and best else "—"])
    epoch = len(next(iter(r.get("later_epochs", [None]) for r in rows.values()))) + 1
    table = common.markdown_table(["origin", *[f"{c}/s" for c in shown], "tfeed × best peer"], lines,
                                  align="l" + "r" * (len(shown) + 1))
    return ["", f"### Epoch {epoch} (the same process and dataset)", "", table]




def chart(path: str, rows: dict, origins: list, candidates: list) -> None:
    def values(candidate, field):
        return [(r[field] if field != "share" else 100.0 * r["delivered"] / max(1, r["total"])) if r.get("status")
                == "ok" else None for r in (rows.get((key, candidate), {}) for key in origins)]

    common.bar_chart(path, origins, {c: values(c, "images_per_s") for c in candidates},
                     title=f"images/s per origin (log scale), {os.cpu_count()} cores", ylabel="images/s", log=True,
                     panel={"series": {c: values(c, "share") for c in candidates},
                            "title": "images delivered (% of the list)", "ylabel": "%"})
