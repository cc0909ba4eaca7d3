"""The seed's datasets, kept for its users, on tfeed's engine.

* :class:`NetworkImages`: subclass it and fill ``self.datapoints`` with
  ``[url, label]`` lists; iterate ``get_data()`` for ``[image, label]`` (BGR
  uint8, as tensorpack/OpenCV gave them), or call ``to_dataset()`` for a
  ``tf.data.Dataset`` that ``model.fit`` takes.
* :class:`ILSVRC12`: ImageNet classification from any HTTP mirror of the
  ILSVRC / Kaggle layout.
"""

from tfeed.datasets.ilsvrc12 import ILSVRC12
from tfeed.datasets.network_images import NetworkImages, ParallelNetworkImages, decode_bgr

__all__ = ["NetworkImages", "ParallelNetworkImages", "ILSVRC12", "decode_bgr"]
