"""Thousands of generated hostile rows through every reader and both engines:
no crash, no hang, every row delivered or counted under a named reason.

Every generated URL that could reach the network names a loopback IP literal
(in several spellings) as its host; only paths, queries, schemes and labels
are mangled, so no lookup or packet ever leaves the machine.
"""

from __future__ import annotations

import csv
import json
import math
import random
import urllib.parse

import pytest

import tfeed
from tfeed import urls as url_rules
from tfeed.source.generator import admit
from tfeed.source.labels import LabelIndex
from tfeed.source.readers import pair_factory

ROWS = 1500
CLASS_NAMES = ["0", "1", "2", "cat"]
PIECES = ["a", "b.jpg", " ", "%", "%zz", "%41", "\0", "\n", "\t", "\r", "\x7f", "é", "😀", "..", "/", "?", "#",
          "\\", "@", ":", "&x=1", ";", "'", '"', "<", "{", "\ud800", "\u202e", "x" * 3000]
SCHEMES = ["http", "HTTP", "https", "ftp", "gopher", "javascript", "file", "", "http:/", "ht tp", "http\0"]
LABELS = [0, 1, 2, -1, 2.0, 2.5, math.nan, math.inf, None, "", "cat", "dog", True, 10**30, "1", " 2 ", "１", b"cat"]


def _hosts(port):
    return [f"127.0.0.1:{port}", f"127.1:{port}", f"2130706433:{port}", f"0x7f.0.0.1:{port}", f"[::1]:{port}",
            f"[::ffff:127.0.0.1]:{port}", "127.0.0.1:1", f"127.0.0.1:{port}"]


def generate(rng: random.Random, port: int, names, count: int = ROWS):
    """``count`` (url, label) rows: real images, mangled URLs, and values that are no URL at all."""
    rows = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.15:
            url = f"http://127.0.0.1:{port}/{rng.choice(names)}"
        elif kind < 0.9:
            path = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 6)))
            url = f"{rng.choice(SCHEMES)}://{rng.choice(_hosts(port))}/{path}"
        else:
            url = rng.choice([None, 7, 3.5, b"\xff\xfe", b"http://127.0.0.1:1/a.jpg", ["x"], {"u": 1}, ""])
        rows.append((url, rng.choice(LABELS)))
    return rows


def test_normalisation_and_labels_never_raise():
    rng = random.Random(0)
    index = LabelIndex(CLASS_NAMES)
    for url, label in generate(rng, 8080, ["a.jpg"], 5000):
        normal, index_or_none, failure = admit(url, label, index)
        assert (normal is None) == (failure is not None)
        if normal is not None:
            assert url_rules.refusal(normal) is None, (url, normal)  # what the source passes, no engine refuses
            if normal.startswith(("http://", "https://")):  # every spelling became one loopback address
                assert urllib.parse.urlsplit(normal).hostname in ("127.0.0.1", "::1", "::ffff:127.0.0.1"), normal


def test_urls_taken_as_already_normal_are_exactly_what_parsing_returns():
    """The unparsed fast path of tfeed.urls.normalize is the parsed path's identity, never a guess."""
    rng = random.Random(1)
    alphabet = ["a", "Z", "0", "1", "9", "2", "5", ".", "-", ":", "/", "?", "#", "@", "%", "[", "]", " ", "é",
                "x", "_", "~", "&", "=", "\\", "0x", "255", "256", "65535", "65536", "08"]
    plain = 0
    for _ in range(30_000):
        scheme = rng.choice(["http://", "https://", "HTTP://", "http:/"])
        host = rng.choice(["", "a", "example.com", "x0x0", "0x7f.1", "A.com", "127.0.0.1", "1.2.3.04", "a-.b"])
        port = rng.choice(["", "", ":80", ":0080", ":65535", ":65536", ":0", ":"])
        url = scheme + host + port + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))
        if url_rules._is_plain_http(url):
            plain += 1
            assert url_rules._normalize_http(url) == (url, ""), url
            assert url_rules.normalize(url) == (url, "")
    assert plain > 500  # the generator does reach the fast path


def _write(path, fmt, rows):
    text_rows = [(u, l) for u, l in rows if isinstance(u, str)]
    if fmt == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        safe = [u.encode("utf-8", "replace").decode() for u, _ in text_rows]
        pq.write_table(pa.table({"url": safe + [None], "label": [str(l) for _, l in text_rows] + [None]}), path)
        return
    with open(path, "w", encoding="utf-8", errors="replace", newline="") as handle:
        if fmt == ".jsonl":
            for url, label in rows:
                value = url.decode("latin-1") if isinstance(url, bytes) else url
                try:
                    handle.write(json.dumps({"url": value, "label": label}) + "\n")
                except (TypeError, ValueError):
                    handle.write(json.dumps({"url": repr(value), "label": None}) + "\n")
        elif fmt == ".csv":
            writer = csv.writer(handle)
            writer.writerow(["url", "label"])
            writer.writerows(text_rows)
        else:
            for url, label in text_rows:
                handle.write(f"{url}\t{label}\n")


@pytest.mark.parametrize("fmt", [".txt", ".csv", ".jsonl", ".parquet"])
def test_every_reader_delivers_or_counts_every_row(tmp_path, fmt):
    rows = generate(random.Random(1), 8080, ["a.jpg"], ROWS)
    path = tmp_path / f"rows{fmt}"
    _write(path, fmt, rows)
    index = LabelIndex(CLASS_NAMES)
    read = list(pair_factory(str(path))())
    assert len(read) > ROWS // 2
    counted = sum(1 for url, label in read if admit(url, label, index)[2] is not None)
    assert 0 < counted < len(read)


@pytest.mark.parametrize("engine", ["python", "native"])
def test_both_engines_deliver_or_count_every_row(engine, server, small_images, request):
    if engine == "native":
        request.getfixturevalue("ops")
    names = sorted(small_images)
    rows = generate(random.Random(2), server.port, names, ROWS)
    config = tfeed.FetchConfig(retries=0, deadline=5, connect_timeout=2, read_timeout=2, adaptive=False)
    ds = tfeed.image_dataset_from_urls(rows, class_names=CLASS_NAMES, batch_size=64, image_size=(8, 8),
                                       shuffle=False, fetch_config=config, fetch_engine=engine)
    delivered = sum(int(images.shape[0]) for images, _ in ds)
    snapshot = ds.stats.snapshot()
    assert delivered + sum(snapshot["failures"].values()) == ROWS, snapshot
    assert delivered > 0 and "internal_error" not in snapshot["failures"]
    assert {"invalid_url", "invalid_label", "http_404"} <= set(snapshot["failures"]), snapshot
