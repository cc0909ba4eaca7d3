"""Source: where the ``(url, label)`` pairs come from.

:mod:`~tfeed.source.readers` streams URL lists (txt, csv, tsv, jsonl,
parquet, gzipped); :mod:`~tfeed.source.generator` selects (splits, shards,
resume), shuffles, encodes labels and groups them for
``tf.data.Dataset.from_generator``.
"""
