"""tfeed.viz: batch grids from datasets and arrays, augmentation pairs, failure gallery, charts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import tfeed
from tfeed.app import viz
from tfeed.testing import ImageServer, encode, synthetic_shapes
from tfeed.testing.images import SHAPE_CLASSES

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def shapes_server():
    images, labels = synthetic_shapes(12, size=32, seed=1)
    files = {f"{SHAPE_CLASSES[label]}/{i}.png": encode(image, "png") for i, (image, label) in
             enumerate(zip(images, labels))}
    with ImageServer(files) as server:
        pairs = [(server.url(name), name.split("/")[0]) for name in sorted(files)]
        pairs += [(server.url("circle/0.png", status=404), "circle"), (server.url("square/x.png", html=1), "square")]
        yield pairs


def _titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_show_batch_from_a_dataset(shapes_server, tmp_path):
    ds = tfeed.image_dataset_from_urls(shapes_server, image_size=(32, 32), batch_size=8, seed=0)
    fig = viz.show_batch(ds, n=6)
    titles = _titles(fig)
    assert len(titles) == 6 and set(titles) <= set(SHAPE_CLASSES)
    path = viz.save_grid(ds, str(tmp_path / "grid.png"), n=4)
    image = cv2.imread(path)
    assert image is not None and image.shape[0] > 100
    unbatched = tfeed.image_dataset_from_urls(shapes_server, image_size=(32, 32), batch_size=None, seed=0)
    assert len(_titles(viz.show_batch(unbatched, n=5))) == 5


def test_show_batch_from_arrays_and_label_kinds():
    gray = np.zeros((3, 8, 8), np.uint8)
    assert len(viz.show_batch(gray).axes) == 4  # 2 x 2 grid for 3 images, no titles
    onehot = np.eye(3, dtype=np.float32)
    fig = viz.show_batch((np.zeros((3, 8, 8, 3), np.float32), onehot), class_names=["a", "b", "c"])
    assert _titles(fig) == ["a", "b", "c"]
    assert viz.label_text(np.array([0.9]), ["no", "yes"]) == "yes"
    assert viz.label_text(b"cat") == "cat"
    assert viz.label_text(np.int32(7)) == "7"


def test_displayable_ranges():
    np.testing.assert_allclose(viz.displayable(np.full((2, 2, 3), 255, np.uint8)), 1.0)
    np.testing.assert_allclose(viz.displayable(np.full((2, 2, 3), 127.5, np.float32)), 0.5)
    np.testing.assert_allclose(viz.displayable(np.full((2, 2, 3), 0.25, np.float32)), 0.25)
    normalized = np.array([[[-2.0, 0.0, 2.0]]], np.float32)
    np.testing.assert_allclose(viz.displayable(normalized), [[[0.0, 0.5, 1.0]]])
    assert viz.displayable(np.zeros((4, 4, 1), np.float32)).shape == (4, 4)


def test_compare_grid():
    images = np.random.default_rng(0).uniform(0, 255, (5, 8, 8, 3)).astype(np.float32)
    fig = viz.compare_grid(images, images[:, ::-1], np.array([0, 1, 0, 1, 0]), ["cat", "dog"], n=5, ncols=3)
    titles = _titles(fig)
    assert len(titles) == 10 and titles[:4] == ["cat", "augmented", "dog", "augmented"]
    with pytest.raises(ValueError, match="originals"):
        viz.compare_grid(images, images[:2])


def test_failure_gallery_and_table(shapes_server):
    ds = tfeed.image_dataset_from_urls(shapes_server, image_size=(32, 32), batch_size=4, seed=0)
    for _ in ds:
        pass
    table = viz.failure_table(ds.stats)
    assert "| http_404 | 1 |" in table and "| not_image | 1 |" in table and "status=404" in table
    fig = viz.failure_gallery(ds)
    texts = [cell.get_text().get_text() for ax in fig.axes for table in ax.tables
             for cell in table.get_celld().values()]
    assert any("status=404" in text for text in texts)
    assert "2 failed URLs" in fig.axes[0].get_title()
    empty = viz.failure_gallery([])
    assert any(t.get_text() == "no failures" for ax in empty.axes for t in ax.texts)
    failures = [tfeed.Failure("http://x/a.jpg", "timeout", "60 s"), tfeed.Failure("http://x/b.jpg", "timeout")]
    assert "| timeout | 2 |" in viz.failure_table(failures)


def test_bench_charts_and_markdown(tmp_path):
    cells = [{"concurrency": c, "parallelism": p, "images_per_s": float(c * p)} for c in (8, 64) for p in (1, 2)]
    table = viz.markdown_grid(cells)
    assert table.splitlines()[0].endswith("| 1 | 2 |") and "**128.0**" in table
    path = viz.save_figure(viz.grid_chart(cells), str(tmp_path / "grid.png"))
    assert cv2.imread(path) is not None
    rows = [{"stage": "fetch", "images_per_s": 900.0}, {"stage": "fetch+decode", "images_per_s": 400.0}]
    assert cv2.imread(viz.save_figure(viz.throughput_chart(rows), str(tmp_path / "stages.png"))) is not None
