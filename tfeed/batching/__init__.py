"""Batch and deliver: label encoding (:mod:`~tfeed.batching.labels`), batching and
the final prefetch (:mod:`~tfeed.batching.stage`), and the accounting of
delivered URLs (:mod:`~tfeed.batching.accounting`)."""
