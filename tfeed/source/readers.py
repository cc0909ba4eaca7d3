"""Read ``(url, label)`` pairs from lists, callables and URL-list files.

Every reader is a zero-argument factory returning a *fresh* iterator, so each
epoch re-reads the source.  Files are streamed line by line (Parquet: batch by
batch), never loaded whole.  Labels are ``None`` when the source has none.

File formats (``.gz`` variants of each are read transparently):

* ``.txt``: one URL per line, optionally a tab and a label; ``#`` comments.
* ``.csv`` / ``.tsv``: a header row; columns ``url_column`` / ``label_column``.
* ``.jsonl`` / ``.ndjson``: one object per line with those keys.
* ``.parquet``: columns of those names (needs ``pip install tfeed[parquet]``).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import zlib
from typing import Callable, Iterable, Iterator, Optional, Tuple

Pair = Tuple[str, Optional[object]]
PairFactory = Callable[[], Iterator[Pair]]

FILE_FORMATS = (".txt", ".csv", ".tsv", ".jsonl", ".ndjson", ".parquet")


def pair_factory(source, *, url_column: str = "url", label_column: str = "label") -> PairFactory:
    """Turn ``source`` into a factory of fresh ``(url, label)`` iterators.

    ``source`` may be a path (str or ``os.PathLike``) to a URL-list file, a
    zero-argument callable returning an iterable, or an iterable of URLs or
    ``(url, label)`` pairs.  A one-shot iterator (a generator object) is read
    once into memory so that later epochs see the same URLs.
    Raises FileNotFoundError / ValueError for a missing file or unknown format.
    """
    if isinstance(source, (str, os.PathLike)):
        return _file_factory(os.fspath(source), url_column, label_column)
    if callable(source):
        return lambda: _as_pairs(source())
    if isinstance(source, Iterator):
        source = list(source)
    if not isinstance(source, Iterable):
        raise TypeError(f"source must be a path, a callable or an iterable of (url, label), got {type(source).__name__}")
    return lambda: _as_pairs(source)


def _as_pairs(items: Iterable) -> Iterator[Pair]:
    """``(url, label)`` of each item: a URL alone, or a pair.  Anything else is
    passed on as a URL, for the source stage to count as ``invalid_url``."""
    for item in items:
        if isinstance(item, (str, bytes)):
            yield _text(item), None
            continue
        try:
            url, label = item
        except (TypeError, ValueError):
            url, label = item, None
        yield _text(url), label


def _text(value):
    """``value`` decoded if bytes (invalid UTF-8 replaced), else as it is."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def file_format(path: str) -> str:
    """The format suffix of ``path`` ignoring ``.gz``; ValueError if unknown."""
    name = path[:-3] if path.endswith(".gz") else path
    suffix = os.path.splitext(name)[1].lower()
    if suffix not in FILE_FORMATS:
        raise ValueError(f"cannot read URL list {path!r}: expected one of {FILE_FORMATS} (optionally .gz)")
    return suffix


def _file_factory(path: str, url_column: str, label_column: str) -> PairFactory:
    suffix = file_format(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"URL list not found: {path}")
    if suffix == ".parquet":
        _require_pyarrow()
        return lambda: _read_parquet(path, url_column, label_column)
    reader = {".txt": _read_txt, ".csv": _read_delimited, ".tsv": _read_delimited,
              ".jsonl": _read_jsonl, ".ndjson": _read_jsonl}[suffix]
    return lambda: reader(path, suffix, url_column, label_column)


def _open_text(path: str):
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


class MalformedFile(ValueError):
    """A URL-list file that cannot be read on: names the file and the line (or Parquet row)."""


# What a damaged file raises while being read: bad gzip, bad UTF-8, an oversized CSV field.
_READ_ERRORS = (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error)


def _located(path: str, where: Callable[[], str], rows: Iterator[Pair]) -> Iterator[Pair]:
    """``rows``, with an error of a damaged file re-raised as MalformedFile at ``where()``."""
    try:
        yield from rows
    except MalformedFile:
        raise
    except _READ_ERRORS as exc:
        raise MalformedFile(f"{path}:{where()}: cannot read on: {type(exc).__name__}: {exc}") from exc


def _read_txt(path, suffix, url_column, label_column) -> Iterator[Pair]:
    line_number = [0]

    def rows():
        with _open_text(path) as handle:
            for line in handle:
                line_number[0] += 1
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                url, _, label = line.partition("\t")
                yield url.strip(), (label.strip() or None)

    return _located(path, lambda: f"line {line_number[0] + 1}", rows())


def _read_delimited(path, suffix, url_column, label_column) -> Iterator[Pair]:
    reader = []

    def rows():
        with _open_text(path) as handle:
            reader.append(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
            _check_columns(path, reader[0].fieldnames or [], url_column)
            for row in reader[0]:
                yield row[url_column], (row.get(label_column) or None)

    return _located(path, lambda: f"line {reader[0].line_num + 1 if reader else 1}", rows())


def _read_jsonl(path, suffix, url_column, label_column) -> Iterator[Pair]:
    line_number = [0]

    def rows():
        with _open_text(path) as handle:
            for number, line in enumerate(handle, 1):
                line_number[0] = number
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (json.JSONDecodeError, RecursionError) as exc:
                    raise MalformedFile(f"{path}:line {number}: not JSON: {exc}") from None
                if not isinstance(row, dict) or url_column not in row:
                    keys = sorted(row) if isinstance(row, dict) else type(row).__name__
                    raise MalformedFile(f"{path}:line {number}: no {url_column!r} key in {keys}")
                yield row[url_column], row.get(label_column)

    return _located(path, lambda: f"line {line_number[0] + 1}", rows())


def _read_parquet(path, url_column, label_column) -> Iterator[Pair]:
    import pyarrow.parquet as pq

    import pyarrow as pa

    row = 0
    try:
        handle = pq.ParquetFile(path)
        names = handle.schema_arrow.names
        _check_columns(path, names, url_column)
        columns = [url_column] + ([label_column] if label_column in names else [])
        for batch in handle.iter_batches(batch_size=8192, columns=columns):
            urls = batch.column(url_column).to_pylist()
            labels = batch.column(label_column).to_pylist() if len(columns) > 1 else [None] * len(urls)
            yield from zip(urls, labels)
            row += len(urls)
    except (pa.ArrowException, OSError) as exc:
        raise MalformedFile(f"{path}:row {row}: cannot read on: {type(exc).__name__}: {exc}") from exc


def _check_columns(path, names, url_column) -> None:
    if url_column not in names:
        raise ValueError(f"{path}: no {url_column!r} column; columns are {list(names)} (see url_column=)")


def _require_pyarrow() -> None:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ImportError("reading .parquet URL lists needs pyarrow: pip install 'tfeed[parquet]'") from None
