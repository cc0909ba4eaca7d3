"""Seedable per-example augmentation as TensorFlow graph ops.

Everything runs in tf.data's C++ threads (no Python, no GIL)::

    from tfeed.augment import imagenet_train
    ds = tfeed.image_dataset_from_urls(pairs, augment=imagenet_train(224), seed=1)

Writing an op: a frozen dataclass subclassing :class:`Op` with ``draws``
(how many uniforms in [0, 1) it needs) and ``transform(image, u)``; colour
ops subclass :class:`ColorOp` and give ``affine(mean, u) -> (matrix, bias)``
instead, so runs of them cost one pass over the pixels.

Modules:
  base        the op contract (``op(image, label, seed)``), Compose,
              RandomApply, RandomOrder, and Recipe (a decode step + ops)
  geometry    crops (RandomResizedCrop fuses with JPEG decoding), resizes,
              flip, rotation, paste
  color       fb.resnet.torch colour jitter and PCA lighting, normalization,
              salt-and-pepper noise
  presets     imagenet_train, imagenet_eval, mnist_train, get_preset(name)
  randomness  stateless seeds per (seed, epoch, URL) and the stage adding them
  preview     a PNG grid of originals and their augmentations
  stage       how image_dataset_from_urls wires an augment= (AugmentPlan)
  tail        a Recipe's colour-and-flip tail as one native step per example

Given to ``image_dataset_from_urls(augment=...)``:
  * a :class:`Recipe` (e.g. a preset) replaces the decode stage: its first op
    decodes (a JPEG crop decodes only its window) and its ``output_size`` is
    the dataset's image size;
  * any other op runs after decode + resize to ``image_size``;
  both get the key ``[hash(url), hash(seed, epoch)]``, so a seed reproduces
  the stream and every epoch draws anew.  A plain ``fn(image, label)`` is
  called as before, without a key.
"""

from tfeed.augment.base import ColorOp, Compose, Op, RandomApply, RandomOrder, Recipe
from tfeed.augment.color import (IMAGENET_EIGVAL, IMAGENET_EIGVEC, IMAGENET_MEAN, IMAGENET_STD, Brightness,
                                 Contrast, Lighting, Normalize, SaltPepper, Saturation, color_jitter)
from tfeed.augment.geometry import (CenterCrop, CenterPaste, HorizontalFlip, RandomCrop, RandomResize,
                                    RandomResizedCrop, Resize, ResizeShorter, Rotation)
from tfeed.augment.presets import PRESETS, get_preset, imagenet_eval, imagenet_train, mnist_train
from tfeed.augment.preview import augmentation_grid, save_grid, show_grid
from tfeed.augment.randomness import element_keys

__all__ = [
    "Op", "ColorOp", "Compose", "RandomApply", "RandomOrder", "Recipe",
    "RandomResizedCrop", "HorizontalFlip", "Resize", "ResizeShorter", "CenterCrop", "RandomCrop",
    "CenterPaste", "RandomResize", "Rotation",
    "Brightness", "Contrast", "Saturation", "color_jitter", "Lighting", "Normalize", "SaltPepper",
    "IMAGENET_EIGVAL", "IMAGENET_EIGVEC", "IMAGENET_MEAN", "IMAGENET_STD",
    "imagenet_train", "imagenet_eval", "mnist_train", "get_preset", "PRESETS",
    "augmentation_grid", "save_grid", "show_grid", "element_keys",
]
