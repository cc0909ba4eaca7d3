"""The seed project's recipes as :class:`~tfeed.augment.Recipe` objects.

* :func:`imagenet_train` -- fb.resnet.torch: Inception crop, colour jitter
  (brightness, contrast, saturation), PCA lighting, horizontal flip.
* :func:`imagenet_eval` -- resize shorter side to 256 (for 224), centre crop.
* :func:`mnist_train` -- the seed's MNIST augmentors: random resize,
  rotation and salt-and-pepper noise, each sometimes; resize; centre paste
  on a larger canvas and random crop back (a small random shift).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

from tfeed.augment.base import RandomApply, Recipe
from tfeed.augment.color import Lighting, Normalize, SaltPepper, color_jitter
from tfeed.augment.geometry import (CenterCrop, CenterPaste, HorizontalFlip, RandomCrop, RandomResize,
                                    RandomResizedCrop, Resize, ResizeShorter, Rotation)
from tfeed.config import check_choice


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    return size


def _normalized(ops: list, normalize: bool) -> list:
    return ops + [Normalize()] if normalize else ops


def imagenet_train(size: int = 224, *, interpolation: str = "bilinear", normalize: bool = False) -> Recipe:
    """``size x size`` training crops.  JPEGs decode only the crop window.
    ``normalize=True`` ends with ImageNet mean/std normalization."""
    # The jitter's three blends commute (see color_jitter), so its random order is left out: same images.
    ops = [RandomResizedCrop(_check_size(size), interpolation=interpolation),
           color_jitter(0.4, 0.4, 0.4, random_order=False), Lighting(0.1), HorizontalFlip()]
    return Recipe(_normalized(ops, normalize), output_size=(size, size))


def imagenet_eval(size: int = 224, *, interpolation: str = "bilinear", normalize: bool = False) -> Recipe:
    """Resize the shorter side to ``round(size * 256 / 224)``, then the
    centred ``size x size`` crop (256 then 224 for the default)."""
    ops = [ResizeShorter(round(_check_size(size) * 256 / 224), interpolation=interpolation), CenterCrop(size)]
    return Recipe(_normalized(ops, normalize), output_size=(size, size))


def mnist_train(size: int = 28) -> Recipe:
    """``size x size`` digits: random resize (x0.8-1.2 per axis, p=0.3),
    rotation up to 15 degrees cropped to the valid area (p=0.5),
    salt-and-pepper noise 1% + 1% (p=0.25), resize to ``size``, centre paste
    on ``size + 4`` and random crop of ``size`` (a shift of up to 2 pixels)."""
    _check_size(size)
    return Recipe([RandomApply(RandomResize((0.8, 1.2), (0.8, 1.2)), 0.3),
                   RandomApply(Rotation(15, crop_valid=True), 0.5),
                   RandomApply(SaltPepper(0.01, 0.01), 0.25),
                   Resize(size), CenterPaste(size + 4), RandomCrop(size)], output_size=(size, size))


PRESETS: Dict[str, Callable[..., Recipe]] = {
    "imagenet_train": imagenet_train,
    "imagenet_eval": imagenet_eval,
    "mnist_train": mnist_train,
}


def get_preset(name: str, size: Optional[int] = None) -> Recipe:
    """The preset called ``name`` (one of :data:`PRESETS`) at ``size``
    (``None``: the preset's default, 224 or 28)."""
    check_choice("preset", name, PRESETS)
    return PRESETS[name]() if size is None else PRESETS[name](size)
