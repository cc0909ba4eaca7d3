"""Fetch: URLs in, image bytes out, by one of two engines behind one contract.

:mod:`~tfeed.fetching.stage` chooses the engine; :mod:`~tfeed.contract`
holds the rules both engines follow (reasons, retries, cache format);
:mod:`~tfeed.fetching.native` is the stage on the libcurl op
(:mod:`tfeed.kernels`); :mod:`~tfeed.fetching.python` the aiohttp engine;
:mod:`~tfeed.fetching.cache` the on-disk cache both share;
:mod:`~tfeed.fetching.sniff` recognises image bytes.
"""
