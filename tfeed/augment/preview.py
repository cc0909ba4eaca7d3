"""Look at an augmentation: a grid with each original in the first column
and ``n_variants`` augmented versions beside it (the seed's image viewer).

    grid = augmentation_grid(photos, imagenet_train(), n_variants=5)
    save_grid("grid.png", photos, imagenet_train())        # PNG on disk
    show_grid(photos, imagenet_train())                    # inline, in a notebook
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import tensorflow as tf

from tfeed.augment import randomness
from tfeed.augment.base import Op, Recipe

Images = Union[Sequence[np.ndarray], Mapping[str, np.ndarray]]
GAP = 4              # pixels between cells
COLUMN_GAP = 16      # between the originals and their variants
BACKGROUND = 255


def augmentation_grid(images: Images, augment, n_variants: int = 4, seed: int = 0,
                      cell_size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """An RGB uint8 grid: one row per image, the original first, then
    ``n_variants`` augmentations of it.

    ``augment`` is a tfeed op or recipe (variant ``v`` of image ``i`` uses the
    key ``[i, epoch_key(seed, v)]``, as if it were element ``i`` in epoch
    ``v``) or any ``fn(image, label) -> (image, label)``.
    Every cell is fitted into ``cell_size`` ``(height, width)`` keeping its
    aspect ratio (default: the recipe's output size, else the largest
    output); values are clipped to 0-255 for display.
    """
    images = list(images.values()) if isinstance(images, Mapping) else list(images)
    if not images or n_variants < 1:
        raise ValueError(f"need at least one image and n_variants >= 1, got {len(images)} and {n_variants}")
    run = _runner(augment)
    rows = []
    for index, image in enumerate(images):
        image = _as_rgb(image)
        keys = [tf.constant([index, randomness.epoch_key(seed, v)], tf.int64) for v in range(n_variants)]
        rows.append([image] + [_to_uint8(run(tf.constant(image), key)) for key in keys])
    if cell_size is None:
        outputs = [cell for row in rows for cell in row[1:]]
        cell_size = (augment.output_size if isinstance(augment, Recipe)
                     else (max(o.shape[0] for o in outputs), max(o.shape[1] for o in outputs)))
    return _layout(rows, tuple(cell_size))


def save_grid(path: str, images: Images, augment, n_variants: int = 4, seed: int = 0,
              cell_size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Write :func:`augmentation_grid` to ``path`` (format from the
    extension, e.g. ``.png``) and return it."""
    grid = augmentation_grid(images, augment, n_variants, seed, cell_size)
    if not cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"could not write {path}")
    return grid


def show_grid(images: Images, augment, n_variants: int = 4, seed: int = 0,
              cell_size: Optional[Tuple[int, int]] = None, scale: float = 1.0):
    """Draw :func:`augmentation_grid` with matplotlib (inline in a notebook)."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("show_grid needs matplotlib: pip install tfeed[viz]") from exc
    grid = augmentation_grid(images, augment, n_variants, seed, cell_size)
    dpi = 100
    figure = plt.figure(figsize=(grid.shape[1] * scale / dpi, grid.shape[0] * scale / dpi), dpi=dpi)
    axes = figure.add_axes([0, 0, 1, 1])
    axes.imshow(grid)
    axes.axis("off")
    return figure


def _runner(augment):
    signature = [tf.TensorSpec([None, None, None], tf.uint8), tf.TensorSpec([2], tf.int64)]
    if isinstance(augment, Op):
        return tf.function(lambda image, key: augment(image, 0, key)[0], input_signature=signature)
    if callable(augment):
        return tf.function(lambda image, key: augment(tf.cast(image, tf.float32), 0)[0], input_signature=signature)
    raise TypeError(f"augment must be a tfeed op or a callable, got {augment!r}")


def _as_rgb(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected an image [H, W], [H, W, 1] or [H, W, 3], got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def _to_uint8(image: tf.Tensor) -> np.ndarray:
    return _as_rgb(np.clip(np.round(image.numpy()), 0, 255).astype(np.uint8))


def _fit(image: np.ndarray, cell_size: Tuple[int, int]) -> np.ndarray:
    """``image`` scaled to fit ``cell_size``, centred on the background."""
    cell_h, cell_w = cell_size
    height, width = image.shape[:2]
    scale = min(cell_h / height, cell_w / width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    if (new_h, new_w) != (height, width):
        method = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
        image = cv2.resize(image, (new_w, new_h), interpolation=method)
    cell = np.full((cell_h, cell_w, 3), BACKGROUND, np.uint8)
    top, left = (cell_h - new_h) // 2, (cell_w - new_w) // 2
    cell[top:top + new_h, left:left + new_w] = image
    return cell


def _layout(rows, cell_size: Tuple[int, int]) -> np.ndarray:
    cell_h, cell_w = cell_size
    columns = len(rows[0])
    height = len(rows) * cell_h + (len(rows) + 1) * GAP
    width = columns * cell_w + (columns + 1) * GAP + (COLUMN_GAP - GAP)
    grid = np.full((height, width, 3), BACKGROUND, np.uint8)
    for r, row in enumerate(rows):
        top = GAP + r * (cell_h + GAP)
        for c, image in enumerate(row):
            left = GAP + c * (cell_w + GAP) + (COLUMN_GAP - GAP if c else 0)
            grid[top:top + cell_h, left:left + cell_w] = _fit(image, cell_size)
    return grid
