"""Pictures of a dataset: batch grids, augmented-vs-original pairs, failed URLs, throughput charts.

Every function returns a :class:`matplotlib.figure.Figure` built without
``pyplot`` (no global figure registry, no GUI backend), so the same code works
in a notebook (the figure displays inline), a script and the ``tfeed`` command::

    ds = tfeed.image_dataset_from_urls("urls.csv", image_size=(128, 128))
    tfeed.viz.show_batch(ds)                  # first batch, titled with class names
    tfeed.viz.save_grid(ds, "grid.png")
    tfeed.viz.failure_gallery(ds.stats)       # failures by reason + the failed URLs

Images may be uint8, float 0-255 (tfeed's output), float 0-1, or normalized
(mean/std): each is mapped to the displayable range.  Needs matplotlib
(``pip install 'tfeed[viz]'``).
"""

from __future__ import annotations

import math
import textwrap
from typing import List, Optional, Sequence, Tuple

import numpy as np

_HINT = "tfeed.app.viz needs matplotlib: pip install 'tfeed[viz]'"
_TITLE_CHARS = 18


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(_HINT) from None
    return Figure(figsize=(width, height), layout="constrained")


# -- inputs -----------------------------------------------------------------
def take_batch(data, n: int = 16) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``(images [k, H, W, C], labels [k, ...] or None)`` with ``k <= n`` from:
    a ``tf.data.Dataset`` (its first batch, or its first ``n`` single
    examples), an ``(images, labels)`` pair, or images alone."""
    if hasattr(data, "element_spec"):
        return _from_dataset(data, n)
    images, labels = (data[0], data[1]) if isinstance(data, (tuple, list)) and len(data) == 2 else (data, None)
    images = _numpy(images)
    if images.ndim == 3 and images.shape[-1] not in (1, 3, 4):
        images = images[..., None]  # a batch of gray [k, H, W]
    if images.ndim == 3:
        images = images[None]  # a single image
    labels = None if labels is None else _numpy(labels)
    return images[:n], (None if labels is None else labels[:n])


def _from_dataset(dataset, n: int):
    spec = dataset.element_spec
    image_spec = spec[0] if isinstance(spec, tuple) else spec
    batched = image_spec.shape.rank == 4
    images, labels = [], []
    for element in dataset.take(1 if batched else n):
        image, label = (element[0], element[1]) if isinstance(element, tuple) else (element, None)
        images.append(_numpy(image))
        if label is not None:
            labels.append(_numpy(label))
    if not images:
        raise ValueError("the dataset yielded nothing to show (every URL failed?)")
    stack = np.concatenate if batched else np.stack
    return stack(images)[:n], (stack(labels)[:n] if labels else None)


def _numpy(value) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def displayable(image) -> np.ndarray:
    """One image as float ``[H, W, 3]`` (or ``[H, W]`` gray) in 0-1 for ``imshow``.

    uint8 and float 0-255 are divided by 255, float 0-1 kept, anything else
    (normalized images) is min-max scaled.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    integer = np.issubdtype(image.dtype, np.integer)
    image = image.astype(np.float32)
    low, high = (float(image.min()), float(image.max())) if image.size else (0.0, 1.0)
    if low >= 0 and high <= 1.0 and not integer:
        return image
    if low >= 0 and high <= 255:
        return image / 255.0
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def label_text(label, class_names: Optional[Sequence[str]] = None) -> str:
    """A label as text: a class index, a one-hot / probability vector
    (argmax), a binary ``[1]`` value, or a string."""
    if label is None:
        return ""
    value = np.asarray(label)
    if value.dtype.kind in "SUO":
        item = value.reshape(-1)[0] if value.size else ""
        return item.decode() if isinstance(item, bytes) else str(item)
    if value.ndim == 1 and value.size > 1:
        index = int(np.argmax(value))
    else:
        number = float(value.reshape(-1)[0])
        index = int(round(number))
    if class_names is not None and 0 <= index < len(class_names):
        return str(class_names[index])
    return str(index)


def _wrapped(title: str, width: int = 55) -> str:
    return textwrap.fill(title, width) if title else title


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


# -- grids --------------------------------------------------------------------
def show_batch(data, class_names: Optional[Sequence[str]] = None, n: int = 16, *, ncols: Optional[int] = None,
               title: Optional[str] = None, cell_inches: float = 1.8):
    """A grid of up to ``n`` images titled with their labels; returns the Figure.

    ``data``: a dataset (``class_names`` default to its ``.class_names``), an
    ``(images, labels)`` batch, or images alone.
    """
    if class_names is None:
        class_names = getattr(data, "class_names", None)
    images, labels = take_batch(data, n)
    count = len(images)
    ncols = ncols or max(1, math.ceil(math.sqrt(count)))
    nrows = max(1, math.ceil(count / ncols))
    fig = _figure(ncols * cell_inches, nrows * (cell_inches + 0.25) + (0.3 if title else 0))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if index >= count:
            continue
        image = displayable(images[index])
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        if labels is not None:
            ax.set_title(_short(label_text(labels[index], class_names), _TITLE_CHARS), fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig, path: str, dpi: int = 100) -> str:
    """Write ``fig`` to ``path`` (format from the extension); returns ``path``."""
    fig.savefig(path, dpi=dpi)
    return path


def save_grid(data, path: str, class_names: Optional[Sequence[str]] = None, n: int = 16, *, dpi: int = 100,
              **kwargs) -> str:
    """:func:`show_batch` written to ``path`` (PNG, JPEG, SVG, PDF...); returns ``path``."""
    return save_figure(show_batch(data, class_names, n, **kwargs), path, dpi)


def compare_grid(originals, augmented, labels=None, class_names: Optional[Sequence[str]] = None, *,
                 n: int = 8, ncols: int = 4, cell_inches: float = 1.8,
                 headings: Tuple[str, str] = ("original", "augmented")):
    """Originals beside their augmented versions: ``ncols`` pairs per row, each
    original titled with its label (else ``headings[0]``), each copy ``headings[1]``."""
    originals, augmented = _numpy(originals)[:n], _numpy(augmented)[:n]
    if len(originals) != len(augmented):
        raise ValueError(f"compare_grid: {len(originals)} originals but {len(augmented)} augmented images")
    labels = None if labels is None else _numpy(labels)
    count = len(originals)
    ncols = max(1, min(ncols, count))
    nrows = max(1, math.ceil(count / ncols))
    fig = _figure(2 * ncols * cell_inches, nrows * (cell_inches + 0.45))
    axes = fig.subplots(nrows, 2 * ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for index in range(count):
        row, col = divmod(index, ncols)
        name = label_text(labels[index], class_names) if labels is not None else ""
        for side, images in enumerate((originals, augmented)):
            ax = axes[row, 2 * col + side]
            image = displayable(images[index])
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_title(_short(name, _TITLE_CHARS) if side == 0 and name else headings[side], fontsize=9)
    return fig


# -- failures -----------------------------------------------------------------
def _failures_of(source, limit: int):
    """``(counts by reason, recent Failure list)`` from a Stats, a dataset
    with ``.stats``, or a list of :class:`tfeed.Failure`."""
    stats = getattr(source, "stats", source)
    if hasattr(stats, "failed_urls"):
        return dict(stats.snapshot()["failures"]), list(stats.failed_urls(limit))
    failures = list(source)
    counts = {}
    for failure in failures:
        counts[failure.reason] = counts.get(failure.reason, 0) + 1
    return counts, failures[-limit:]


def failure_table(source, limit: int = 20, url_chars: int = 70) -> str:
    """A markdown table of the most recent failed URLs with reason and detail."""
    counts, failures = _failures_of(source, limit)
    if not counts:
        return "no failures"
    lines = ["| reason | count |", "|---|---:|"]
    lines += [f"| {reason} | {count} |" for reason, count in sorted(counts.items(), key=lambda kv: -kv[1])]
    lines += ["", "| url | reason | detail |", "|---|---|---|"]
    for failure in failures:
        detail = _short(str(failure.detail).replace("|", "/").replace("\n", " "), 60)
        lines.append(f"| {_short(failure.url, url_chars)} | {failure.reason} | {detail} |")
    return "\n".join(lines)


def failure_gallery(source, limit: int = 20):
    """Failed URLs at a glance: counts by reason (bars) above a table of the
    ``limit`` most recent failures (URL, reason, detail).  ``source`` is a
    :class:`tfeed.Stats`, a tfeed dataset, or a list of :class:`tfeed.Failure`."""
    counts, failures = _failures_of(source, limit)
    if not counts:
        fig = _figure(6, 1.5)
        ax = fig.subplots()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no failures", ha="center", va="center", fontsize=14)
        return fig
    bar_inches, table_inches = 0.9 + 0.3 * len(counts), 0.45 + 0.24 * (len(failures) + 1)
    fig = _figure(11, bar_inches + table_inches)
    bars_ax, table_ax = fig.subplots(2, 1, height_ratios=[bar_inches, table_inches])
    ordered = sorted(counts.items(), key=lambda kv: kv[1])
    bars_ax.barh([reason for reason, _ in ordered], [count for _, count in ordered], height=0.6, color="#c0504d")
    for y, (_, count) in enumerate(ordered):
        bars_ax.text(count, y, f" {count}", va="center", fontsize=9)
    bars_ax.xaxis.get_major_locator().set_params(integer=True)
    bars_ax.set_xlabel("failed URLs")
    bars_ax.set_title(f"{sum(counts.values())} failed URLs by reason")
    bars_ax.spines[["top", "right"]].set_visible(False)
    table_ax.set_axis_off()
    if failures:
        cells = [[_short(f.url, 75), f.reason, _short(str(f.detail).replace("\n", " "), 55)] for f in failures]
        table = table_ax.table(cellText=cells, colLabels=["url", "reason", "detail"], cellLoc="left",
                               colLoc="left", colWidths=[0.5, 0.12, 0.38], bbox=[0, 0, 1, 1])
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        for cell in table.get_celld().values():
            cell.PAD = 0.01
        table_ax.set_title(f"most recent {len(failures)} failures", fontsize=10)
    return fig


# -- benchmark charts ------------------------------------------------------------
def throughput_chart(rows: Sequence[dict], title: str = "tfeed bench"):
    """Horizontal bars of ``images_per_s`` per ``stage`` (``tfeed bench`` rows)."""
    fig = _figure(7, 1.3 + 0.5 * max(len(rows), 1))
    ax = fig.subplots()
    names = [row["stage"] for row in rows][::-1]
    rates = [row["images_per_s"] for row in rows][::-1]
    ax.barh(names, rates, color="#4f81bd")
    for y, rate in enumerate(rates):
        ax.text(rate, y, f" {rate:,.0f}", va="center", fontsize=9)
    ax.set_xlabel("images / s")
    ax.set_title(_wrapped(title))
    ax.margins(x=0.15)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def grid_chart(cells: Sequence[dict], title: str = "tfeed bench --grid"):
    """images/s against fetch concurrency, one line per decode parallelism
    (``tfeed bench --grid`` cells: ``concurrency``, ``parallelism``,
    ``images_per_s``); the best cell is marked."""
    fig = _figure(7, 4.2)
    ax = fig.subplots()
    for parallelism in sorted({cell["parallelism"] for cell in cells}):
        line = sorted((c for c in cells if c["parallelism"] == parallelism), key=lambda c: c["concurrency"])
        ax.plot([c["concurrency"] for c in line], [c["images_per_s"] for c in line], marker="o",
                label=f"decode parallelism {parallelism}")
    best = max(cells, key=lambda c: c["images_per_s"])
    rightmost = best["concurrency"] == max(c["concurrency"] for c in cells)
    ax.annotate(f"best: {best['images_per_s']:,.0f} img/s", (best["concurrency"], best["images_per_s"]),
                textcoords="offset points", xytext=(0, 8), ha="right" if rightmost else "center", fontsize=9)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({c["concurrency"] for c in cells}))
    ax.get_xaxis().set_major_formatter("{x:.0f}")
    ax.set_xlabel("downloads in flight (max_in_flight)")
    ax.set_ylabel("images / s")
    ax.set_ylim(0, best["images_per_s"] * 1.15)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(_wrapped(title))
    return fig


def markdown_grid(cells: Sequence[dict], value: str = "images_per_s") -> str:
    """The grid as the seed's markdown table: rows concurrency, columns parallelism."""
    concurrencies = sorted({c["concurrency"] for c in cells})
    parallelisms = sorted({c["parallelism"] for c in cells})
    table = {(c["concurrency"], c["parallelism"]): c[value] for c in cells}
    best = max(cells, key=lambda c: c[value])
    lines = ["| in flight \\ decode parallelism | " + " | ".join(str(p) for p in parallelisms) + " |",
             "|---|" + "---:|" * len(parallelisms)]
    for concurrency in concurrencies:
        values: List[str] = []
        for parallelism in parallelisms:
            number = table.get((concurrency, parallelism))
            text = "" if number is None else f"{number:,.1f}"
            if number is not None and (concurrency, parallelism) == (best["concurrency"], best["parallelism"]):
                text = f"**{text}**"
            values.append(text)
        lines.append(f"| {concurrency} | " + " | ".join(values) + " |")
    return "\n".join(lines)
