"""Every source format, against the ImageServer and a real nginx."""

from __future__ import annotations

import csv
import gzip
import json

import pytest

import tfeed
from helpers import collect, match_images

SIZE = (32, 32)


def _write(path, fmt, rows, url_column="url", label_column="label"):
    opener = gzip.open if str(path).endswith(".gz") else open
    if fmt == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({url_column: [u for u, _ in rows], label_column: [l for _, l in rows]}), path)
        return
    with opener(path, "wt", encoding="utf-8", newline="") as handle:
        if fmt == ".txt":
            handle.write("# a comment\n\n")
            for url, label in rows:
                handle.write(f"{url}\t{label}\n")
        elif fmt in (".csv", ".tsv"):
            writer = csv.writer(handle, delimiter="\t" if fmt == ".tsv" else ",")
            writer.writerow(["id", url_column, label_column])
            for i, (url, label) in enumerate(rows):
                writer.writerow([i, url, label])
        else:
            for url, label in rows:
                handle.write(json.dumps({url_column: url, label_column: label, "extra": 1}) + "\n")


def _rows(srv, images):
    names = sorted(images)[:12]
    return names, [(srv.url(name), ["cat", "dog", "emu"][i % 3]) for i, name in enumerate(names)]


def _load(source, **kwargs):
    return tfeed.image_dataset_from_urls(source, image_size=SIZE, batch_size=None, shuffle=False,
                                         deterministic=True, **kwargs)


def _check(dataset, names, rows, images):
    got_images, got_labels = collect(dataset)
    assert match_images(got_images, [images[n] for n in names], SIZE) == list(range(len(names)))
    assert dataset.class_names == ["cat", "dog", "emu"]
    assert [dataset.class_names[label] for label in got_labels] == [label for _, label in rows]
    assert dataset.stats.snapshot()["failed"] == 0


@pytest.mark.parametrize("fmt", [".txt", ".csv", ".tsv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("gz", ["", ".gz"])
@pytest.mark.parametrize("backend", ["server", "nginx"])
def test_file_formats(fmt, gz, backend, request, small_images, tmp_path):
    if fmt == ".parquet" and gz:
        pytest.skip("parquet compresses internally; .parquet.gz is not a format")
    srv = request.getfixturevalue(backend)
    names, rows = _rows(srv, small_images)
    path = tmp_path / f"urls{fmt}{gz}"
    _write(path, fmt, rows)
    _check(_load(str(path)), names, rows, small_images)


def test_custom_columns(server, small_images, tmp_path):
    names, rows = _rows(server, small_images)
    path = tmp_path / "urls.csv"
    _write(path, ".csv", rows, url_column="image_url", label_column="class")
    _check(_load(path, url_column="image_url", label_column="class"), names, rows, small_images)
    with pytest.raises(ValueError, match="image_url"):
        _load(path)


@pytest.mark.parametrize("kind", ["list", "callable", "generator"])
def test_python_sources(kind, server, small_images):
    names, rows = _rows(server, small_images)
    source = {"list": rows, "callable": lambda: iter(rows), "generator": (r for r in rows)}[kind]
    dataset = _load(source)
    _check(dataset, names, rows, small_images)
    _check(dataset, names, rows, small_images)  # a second epoch reads the source again


def test_bare_urls_with_label_list_and_none(server, small_images):
    names, rows = _rows(server, small_images)
    urls = [url for url, _ in rows]
    _check(_load(urls, labels=[label for _, label in rows]), names, rows, small_images)
    images = [image.numpy() for image in _load(urls, labels=None)]
    assert match_images(images, [small_images[n] for n in names], SIZE) == list(range(len(names)))
    with pytest.raises(ValueError, match="labels has 2 entries"):
        _load(urls, labels=["a", "b"])


def test_bad_paths_fail_early(tmp_path):
    with pytest.raises(FileNotFoundError):
        _load(str(tmp_path / "missing.csv"))
    (tmp_path / "urls.xml").write_text("<x/>")
    with pytest.raises(ValueError, match="expected one of"):
        _load(str(tmp_path / "urls.xml"))


def test_large_file_is_streamed(server, small_images, tmp_path):
    """A 200k-line gzip'd list is read lazily: taking 5 examples reads a few lines only."""
    name = sorted(small_images)[0]
    path = tmp_path / "big.txt.gz"
    with gzip.open(path, "wt") as handle:
        for i in range(200_000):
            handle.write(f"{server.url(name)}?n={i}\t{i % 2}\n")
    dataset = tfeed.image_dataset_from_urls(str(path), image_size=SIZE, batch_size=4, shuffle=False)
    assert dataset.class_names == ["0", "1"]
    images, labels = next(iter(dataset))
    assert images.shape == (4, 32, 32, 3)
