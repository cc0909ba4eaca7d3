"""Labels that must never scramble and rows/files that must never crash an
epoch silently: every row is delivered, counted, or stops the epoch with an
error naming the file and line.  Loopback only."""

from __future__ import annotations

import gzip
import json
import math

import pytest

import tfeed
from tfeed.source import labels as label_rules
from tfeed.source.generator import admit
from tfeed.source.labels import LabelIndex
from tfeed.source.readers import MalformedFile, pair_factory


def test_integer_labels_keep_numeric_order_with_negatives():
    index = LabelIndex.infer([-1, 0, 1, 2, 10, 3])
    assert index.class_names == ["-1", "0", "1", "2", "3", "10"]
    assert [index.encode(v) for v in (-1, 0, 1, 2, 3, 10, "2", 2.0)] == [0, 1, 2, 3, 4, 5, 3, 3]


def test_whole_floats_are_integers_and_nan_none_empty_are_invalid():
    index = LabelIndex.infer([0.0, 1.0, 2.0, math.nan, None, "", "nan"])
    assert index.class_names == ["0", "1", "2"]
    assert [index.encode(v) for v in (2.0, 2, math.nan, None, "", float("inf"))] == [2, 2, None, None, None, None]


def test_a_huge_label_is_a_clear_error_and_the_cap_is_settable(monkeypatch):
    with pytest.raises(ValueError, match=r"1099511627777 classes .*largest integer label is 1099511627776"):
        LabelIndex.infer([0, 2**40])
    monkeypatch.setattr(label_rules, "MAX_CLASSES", 3)
    with pytest.raises(ValueError, match="more than 3"):
        LabelIndex.infer(["a", "b", "c", "d"])
    assert len(LabelIndex.infer([0, 1, 2])) == 3


def test_labels_in_a_pipeline_train_as_their_numeric_class(server, small_images):
    names = sorted(n for n in small_images if n.endswith(".jpg"))[:6]
    raw = [-1, 0, 1, 2, 10, 3]
    pairs = [(server.url(n), label) for n, label in zip(names, raw)] + [(server.url(names[0]), math.nan)]
    ds = tfeed.image_dataset_from_urls(pairs, batch_size=None, image_size=(8, 8), shuffle=False,
                                       deterministic=True, fetch_engine="python")
    got = [int(label) for _, label in ds]
    assert [ds.class_names[i] for i in got] == [str(v) for v in raw]
    assert ds.stats.snapshot()["failures"] == {"invalid_label": 1}


def _url_rows(server, small_images):
    name = sorted(small_images)[0]
    return server.url(name), [server.url(name, n=i) for i in range(3)]


def test_null_and_non_string_urls_count_as_invalid_url(server, small_images, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, good = _url_rows(server, small_images)
    parquet = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"url": [good[0], None, good[1]], "label": [0, 1, 0]}), parquet)
    jsonl = tmp_path / "urls.jsonl"
    jsonl.write_text("\n".join(json.dumps({"url": u, "label": 0}) for u in [good[0], 7, None, good[2], [1]]))
    listed = [(good[0], 0), (None, 0), (3.5, 0), (b"\xff\xfe", 0)]
    index = LabelIndex(["0", "1"])
    for source, refused in ((jsonl, 3), (listed, 2)):  # the source stage's verdicts, no download needed
        verdicts = [admit(url, label, index)[2] for url, label in pair_factory(source)()]
        assert [f.reason for f in verdicts if f is not None] == ["invalid_url"] * refused, source
    ds = tfeed.image_dataset_from_urls(parquet, batch_size=None, image_size=(8, 8), shuffle=False,
                                       fetch_engine="python", class_names=["0", "1"])
    assert sum(1 for _ in ds) == 2
    assert ds.stats.snapshot()["failures"] == {"invalid_url": 1}


@pytest.mark.parametrize("case", ["csv_field", "gzip", "jsonl", "parquet"])
def test_malformed_files_name_the_file_and_line(tmp_path, case):
    if case == "csv_field":
        path = tmp_path / "urls.csv"
        path.write_text("url,label\nhttp://127.0.0.1/a.jpg,0\nhttp://127.0.0.1/" + "x" * 200_000 + ",1\n")
        where = f"{path}:line 3"
    elif case == "gzip":
        path = tmp_path / "urls.txt.gz"
        data = gzip.compress(("http://127.0.0.1/a.jpg\t0\n" * 5000).encode())
        path.write_bytes(data[: len(data) // 2])
        where = f"{path}:line "
    elif case == "jsonl":
        path = tmp_path / "urls.jsonl"
        path.write_text('{"url": "http://127.0.0.1/a.jpg"}\n[1, 2]\n')
        where = f"{path}:line 2"
    else:
        path = tmp_path / "urls.parquet"
        path.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")
        where = f"{path}:row 0"
    with pytest.raises(MalformedFile) as raised:
        list(pair_factory(str(path))())
    assert where in str(raised.value)
