"""Test helpers that ship with tfeed: a fault-injecting image server, nginx, and images.

Used by tfeed's own tests, demo and benchmarks, and meant for users' tests too:

    from tfeed.testing import ImageServer, web_like_corpus

    with ImageServer(web_like_corpus(100), latency=0.05) as server:
        urls = [server.url(name) for name in server.names]
        broken = server.url(server.names[0], truncate=0.5)

Names are imported on first use, so ``python -m tfeed.testing.server`` runs the
server module exactly once and ``import tfeed.testing`` stays cheap.
"""

import importlib

_EXPORTS = {
    "ImageServer": "server",
    "NginxServer": "nginx", "NginxUnavailable": "nginx",
    "sample_photos": "images", "digits": "images", "synthetic_shapes": "images", "encode": "images",
    "web_like_corpus": "images", "write_images": "images",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
