"""Decode: image bytes to float32 ``[height, width, 3]`` with ``tf.image`` (:mod:`~tfeed.decoding.stage`)."""
