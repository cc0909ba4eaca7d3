"""ImageNet (ILSVRC 2012 classification) from any HTTP mirror of the standard layout.

The layout is the one ImageNet's own archives unpack to and Kaggle's
"ImageNet Object Localization Challenge" ships::

    BASE/LOC_synset_mapping.txt                  n01440764 tench, Tinca tinca   (class order)
    BASE/LOC_train_solution.csv                  ImageId,PredictionString (images with boxes)
    BASE/LOC_val_solution.csv                    ILSVRC2012_val_00000001,n01751748 ...
    BASE/ILSVRC/ImageSets/CLS-LOC/train_cls.txt  n01440764/n01440764_10026 1    (every train image)
    BASE/ILSVRC/Data/CLS-LOC/train/<wnid>/<wnid>_<n>.JPEG
    BASE/ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_<8 digits>.JPEG

Class ``i`` is the ``i``-th line of the synset mapping (the order every
ImageNet model uses).  The train list is ``train_cls.txt`` when the mirror has
it (all 1,281,167 images), else ``LOC_train_solution.csv`` (only the ~545k
images with boxes).  The lists are streamed, never loaded whole into memory
as text.
"""

from __future__ import annotations

import csv
import io
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Iterator, List, Optional, Tuple

from tfeed.config import FetchConfig, check_choice
from tfeed.datasets.network_images import NetworkImages
from tfeed.errors import ErrorPolicy

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
SYNSET_MAPPING = "LOC_synset_mapping.txt"
TRAIN_LIST = "ILSVRC/ImageSets/CLS-LOC/train_cls.txt"
SOLUTIONS = {"train": "LOC_train_solution.csv", "val": "LOC_val_solution.csv"}
IMAGES = "ILSVRC/Data/CLS-LOC/"


class ILSVRC12(NetworkImages):
    """ILSVRC 2012 classification images from ``base_url``.

    Args:
      base_url: the mirror's root (the directory holding ``LOC_synset_mapping.txt``).
      split: ``"train"`` or ``"val"``.
      shuffle: default True for train, False for val.
      seed / fetch_config / on_error: as for :class:`NetworkImages`.
      timeout: seconds for reading each metadata file.

    Attributes:
      class_names: the synset ids (``"n01440764"``...) in class order.
      descriptions: their human-readable names from the mapping ("tench, Tinca tinca").
      datapoints: ``[url, class_index]`` lists (the seed's form).

    ``get_data()`` / ``parallel()`` yield BGR arrays like the seed;
    ``to_dataset(image_size=(224, 224), ...)`` gives a ``tf.data.Dataset``
    whose ``class_names`` are the synset ids; ``pairs()`` gives
    ``(url, synset)`` for :func:`tfeed.image_dataset_from_urls`.
    """

    def __init__(self, base_url: str, split: str = "train", shuffle: Optional[bool] = None, *,
                 seed: Optional[int] = None, fetch_config: Optional[FetchConfig] = None,
                 on_error: ErrorPolicy = "skip", timeout: float = 60.0):
        check_choice("split", split, SPLITS)
        super().__init__(split == "train" if shuffle is None else shuffle, seed=seed, fetch_config=fetch_config,
                         on_error=on_error)
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.split = split
        self.timeout = timeout
        self.class_names, self.descriptions = self._read_synsets()
        index = {wnid: i for i, wnid in enumerate(self.class_names)}
        self.datapoints = []
        for path, wnid in self._images():
            if wnid not in index:
                raise ValueError(f"{path}: synset {wnid} is not in {SYNSET_MAPPING}")
            self.datapoints.append([self.base_url + path, index[wnid]])

    def pairs(self) -> List[Tuple[str, str]]:
        """``(url, synset id)`` for every datapoint (for ``image_dataset_from_urls``
        with ``class_names=self.class_names``)."""
        return [(url, self.class_names[label]) for url, label, *_ in self.datapoints]

    # -- metadata -------------------------------------------------------------------
    def _read_synsets(self) -> Tuple[List[str], List[str]]:
        wnids, descriptions = [], []
        for line in self._lines(SYNSET_MAPPING):
            wnid, _, text = line.strip().partition(" ")
            if wnid:
                wnids.append(wnid)
                descriptions.append(text.strip())
        if not wnids:
            raise ValueError(f"{self.base_url}{SYNSET_MAPPING} lists no synsets")
        if len(set(wnids)) != len(wnids):
            raise ValueError(f"{self.base_url}{SYNSET_MAPPING} lists a synset twice")
        return wnids, descriptions

    def _images(self) -> Iterator[Tuple[str, str]]:
        """``(path below base_url, synset id)`` of every image of the split."""
        if self.split == "val":
            rows = sorted(self._solution_rows("val"))
            return ((f"{IMAGES}val/{image_id}.JPEG", wnid) for image_id, wnid in rows)
        try:
            return list(self._train_list())
        except FileNotFoundError:
            log.info("%s%s not found; using %s (only the images with boxes)", self.base_url, TRAIN_LIST,
                     SOLUTIONS["train"])
        rows = sorted(self._solution_rows("train"))
        return ((f"{IMAGES}train/{wnid}/{image_id}.JPEG", wnid) for image_id, wnid in rows)

    def _train_list(self) -> Iterator[Tuple[str, str]]:
        for line in self._lines(TRAIN_LIST):
            name = line.split()[0] if line.strip() else ""
            if not name:
                continue
            yield f"{IMAGES}train/{name}.JPEG", name.split("/")[0]

    def _solution_rows(self, split: str) -> Iterator[Tuple[str, str]]:
        """``(ImageId, synset of its first box)`` from a ``LOC_*_solution.csv``."""
        name = SOLUTIONS[split]
        rows = csv.DictReader(self._lines(name))
        if rows.fieldnames is None or not {"ImageId", "PredictionString"} <= set(rows.fieldnames):
            raise ValueError(f"{self.base_url}{name}: expected columns ImageId,PredictionString, "
                             f"got {rows.fieldnames}")
        for row in rows:
            tokens = (row["PredictionString"] or "").split()
            if not tokens:
                raise ValueError(f"{name}: {row['ImageId']} has no label")
            yield row["ImageId"], tokens[0]

    def _lines(self, name: str) -> Iterator[str]:
        """Stream the text file ``name`` of the mirror line by line."""
        url = urllib.parse.urljoin(self.base_url, name)
        try:
            response = urllib.request.urlopen(url, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code in (403, 404, 410):
                raise FileNotFoundError(f"ILSVRC12 mirror has no {name}: {url} answered HTTP {exc.code}") from None
            raise OSError(f"ILSVRC12: cannot read {url}: HTTP {exc.code}") from None
        except urllib.error.URLError as exc:
            raise OSError(f"ILSVRC12: cannot read {url}: {exc.reason}") from None
        with response:
            yield from io.TextIOWrapper(response, encoding="utf-8", newline="")
