"""The Python fetch engine: aiohttp on one background asyncio loop.

:mod:`~tfeed.fetching.python.download` fetches one URL (attempts, retries,
size cap, sniffing); :mod:`~tfeed.fetching.python.engine` keeps hundreds in
flight; :mod:`~tfeed.fetching.python.stage` is the tf.data stage.
"""
