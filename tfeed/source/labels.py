"""Raw labels to class indices, never silently remapped.

A raw label is read as a *key*: an int (``3``, ``-1``, ``"3"``, ``3.0``), or
a string (any other text).  NaN, None, ``""`` and non-whole floats given
where ints are expected name no class: such a URL counts as
``invalid_label``.  Inferred classes are:

* all keys non-negative ints: ``"0" .. str(max)``, so label ``k`` is class
  ``k`` (a class count above :data:`MAX_CLASSES` is a ValueError, so one
  stray ``2**40`` cannot build a trillion classes);
* otherwise ints in numeric order (``-1, 0, 2, 10``), then strings sorted.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence, Union

Key = Union[int, str]
MAX_CLASSES = 1_000_000  # inferred classes at most (settable: tfeed.source.labels.MAX_CLASSES = n)


def label_key(label) -> Optional[Key]:
    """The key of a raw label (see the module doc), or None if it names no class."""
    if label is None or isinstance(label, bool):
        return None if label is None else str(label)
    if isinstance(label, bytes):
        label = label.decode("utf-8", errors="replace")
    if isinstance(label, int):
        return int(label)
    if isinstance(label, float) or type(label).__name__.startswith(("float", "int")):
        try:
            value = float(label)
        except (TypeError, ValueError):
            return str(label)
        if math.isnan(value) or math.isinf(value):
            return None
        return int(value) if value.is_integer() else repr(value)
    text = str(label).strip()
    if not text or text.lower() == "nan":
        return None
    try:
        return int(text)
    except ValueError:
        return text


class LabelIndex:
    """Maps raw labels (class names or ints) to class indices 0..n-1."""

    def __init__(self, class_names: Sequence):
        self.class_names: List[str] = [str(name) for name in class_names]
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names has duplicates: {self.class_names}")
        self._index: Dict[Key, int] = {}
        for i, name in enumerate(self.class_names):
            self._index[name] = i
            key = label_key(name)
            if key is not None:
                self._index.setdefault(key, i)

    @classmethod
    def infer(cls, labels: Iterable, max_classes: Optional[int] = None) -> "LabelIndex":
        """Classes inferred from every raw label of one pass over the source.

        Raises ValueError when no label names a class, or when more than
        ``max_classes`` (default :data:`MAX_CLASSES`) classes would be made.
        """
        cap = MAX_CLASSES if max_classes is None else max_classes
        keys = {key for key in map(label_key, labels) if key is not None}
        if not keys:
            raise ValueError("labels='inferred' but the source has no labels; pass labels=None or a list")
        ints = sorted(key for key in keys if isinstance(key, int))
        texts = sorted(key for key in keys if isinstance(key, str))
        dense = not texts and ints[0] >= 0
        count = ints[-1] + 1 if dense else len(keys)
        if count > cap:
            largest = f" (the largest integer label is {ints[-1]})" if dense else ""
            raise ValueError(f"the labels would make {count} classes{largest}, more than {cap}; pass class_names "
                             "explicitly, or raise tfeed.source.labels.MAX_CLASSES")
        if dense:
            return cls([str(i) for i in range(count)])
        return cls([str(i) for i in ints] + texts)

    def __len__(self) -> int:
        return len(self.class_names)

    def encode(self, label) -> Optional[int]:
        """Class index of ``label``, or None if it names no class."""
        if isinstance(label, str) and label in self._index:
            return self._index[label]
        key = label_key(label)
        if key is None:
            return None
        index = self._index.get(key)
        if index is None and isinstance(key, int) and 0 <= key < len(self):  # an index into class_names
            index = key
        return index
