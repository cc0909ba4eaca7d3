"""Settings of the fetch engine, validated once when built."""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from tfeed import contract
from tfeed.addresses import parse_networks


def check_choice(name: str, value, choices) -> None:
    """ValueError naming ``name``, what was received and what is allowed."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class FetchConfig:
    """How URLs are downloaded.  Times are seconds, sizes bytes.

    max_in_flight: requests kept open at once, over all hosts (a cap).
    max_in_flight_bytes: bodies held (downloading or waiting to be decoded)
        above which no new request starts.
    connections_per_host: open requests (and keep-alive connections) to one
        host at most: a cap; with ``adaptive`` each host's window starts at 4
        and grows while the host answers well (see
        :mod:`tfeed.fetching.limiter`).
    adaptive: per-host adaptive concurrency and pacing.  429, 503 and
        refused or reset connections from a host slow or pause that host and
        put the URL back in its queue without spending its retries;
        ``Retry-After`` pauses the host's whole queue.  ``False``: a fixed
        window of ``connections_per_host`` and overload retried like any
        retryable failure.
    host_patience: seconds a host may answer nothing but overload before its
        URLs are given up as ``rate_limited`` (so an epoch always ends).
    max_requests_per_second_per_host: a fixed pace per host (None: only the
        adaptive one).
    respect_opt_out: a response whose ``X-Robots-Tag`` header says ``noai`` or
        ``noimageai`` (for any user agent) is not kept; the URL counts as
        ``opted_out``.  On by default, as in img2dataset: an image's creator
        asked that it not train models, and the count shows what it cost.
    connect_timeout / read_timeout: per attempt; read_timeout bounds the gap
        between two received chunks.  With ``adaptive``, a host that has
        answered gets a shorter connect timeout: 4x its fastest answer, at
        least 0.1 s, doubled after each one that expires (a full accept queue
        drops connections, and the kernel tries again only after 1 s).
    deadline: total time for one URL, retries and backoff included.
    retries: extra attempts after a retryable failure (connection, timeout,
        5xx, 408, 429).  Backoff is exponential with full jitter, starting at
        ``backoff`` and capped at ``max_backoff``; ``Retry-After`` is honoured.
    max_redirects: redirects followed per attempt.
    max_bytes: a body larger than this counts as ``too_large``.
    max_pixels: a body whose header (JPEG SOF, PNG IHDR, GIF, WebP, BMP,
        TIFF, AVIF/HEIC 'ispe', ICO) declares more pixels counts as
        ``too_large``, checked before any decoder allocates (default 90
        million: a 48 MP phone photo passes; decoders hold 3-4 bytes per
        pixel); ``None``: no limit (the decoders' own, 2^29-2^30 pixels).
    schemes: URL schemes accepted; others count as ``invalid_url``.  ``file``
        also admits plain local paths; ``gs`` (and any other ``tf.io.gfile``
        scheme listed) is read through ``tf.io.gfile``.
    dns_cache_ttl: seconds a resolved address is reused.
    trust_env: honour ``HTTP(S)_PROXY`` / ``NO_PROXY`` and ``~/.netrc`` (costs
        a thread hop per request, so off unless you sit behind a proxy).
    ca_file: PEM file of the certificate authorities trusted for https,
        instead of the system's (e.g. a company's private CA).
    verify_tls: ``False`` accepts any server certificate (never on the open
        internet).  An untrusted certificate counts as ``tls`` and is not retried.
    deny_networks: IP networks (CIDR strings) never connected to, checked on
        the address each connection is about to open (after DNS, on every
        redirect).  A URL that would reach one counts as ``blocked_address``
        and is not retried.  Default :data:`tfeed.contract.DEFAULT_DENY_NETWORKS`:
        every non-public range (private, CGNAT, link-local, cloud metadata,
        multicast, ...) except loopback.  ``tfeed.contract.PRIVATE_NETWORKS``
        adds loopback; ``()`` allows every address.  Needs ``trust_env=False``
        (behind a proxy the target's address is the proxy's to resolve).
    file_root: a directory that confines local files (``file://`` URLs and
        plain paths; needs ``file`` in ``schemes``): a path is read only when
        it resolves to a file beneath it, judged on where it leads (``..``,
        percent-encoded dots, symlinks pointing out, absolute paths
        elsewhere); others count as ``outside_file_root`` and are never
        opened (:func:`tfeed.safefs.open_beneath`).  ``None``: any path.
    """

    max_in_flight: int = 256
    max_in_flight_bytes: int = 512 * 2**20
    connections_per_host: int = 256
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    deadline: float = 60.0
    retries: int = 3
    backoff: float = 0.25
    max_backoff: float = 8.0
    max_redirects: int = 5
    max_bytes: int = 32 * 2**20
    max_pixels: Optional[int] = contract.DEFAULT_MAX_PIXELS
    schemes: tuple = ("http", "https")
    dns_cache_ttl: float = 300.0
    trust_env: bool = False
    user_agent: str = "tfeed (+https://pypi.org/project/tfeed/)"
    ca_file: Optional[str] = None
    verify_tls: bool = True
    adaptive: bool = True
    host_patience: float = 300.0
    max_requests_per_second_per_host: Optional[float] = None
    respect_opt_out: bool = True
    deny_networks: tuple = contract.DEFAULT_DENY_NETWORKS
    file_root: Optional[str] = None

    def __post_init__(self):
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1 or None, got {self.max_pixels!r}")
        for name in ("max_in_flight", "max_in_flight_bytes", "connections_per_host", "max_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        rate = self.max_requests_per_second_per_host
        if rate is not None and not rate > 0:
            raise ValueError(f"max_requests_per_second_per_host must be > 0 or None, got {rate!r}")
        for name in ("connect_timeout", "read_timeout", "deadline", "host_patience"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)!r}")
        for name in ("retries", "max_redirects", "backoff", "max_backoff", "dns_cache_ttl"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        schemes = tuple(self.schemes)
        if not schemes:
            raise ValueError("schemes must name at least one URL scheme")
        object.__setattr__(self, "schemes", schemes)
        object.__setattr__(self, "deny_networks", parse_networks(self.deny_networks))
        if self.deny_networks and self.trust_env:
            raise ValueError("trust_env=True sends requests through a proxy, where deny_networks cannot see the "
                             "address reached: pass deny_networks=() with trust_env=True (and let the proxy "
                             "enforce the policy), or trust_env=False")
        if self.ca_file is not None:
            if not os.path.isfile(self.ca_file):
                raise ValueError(f"ca_file {self.ca_file!r} is not a file")
            object.__setattr__(self, "ca_file", os.path.abspath(self.ca_file))
        if self.file_root is not None:
            self._check_file_root(schemes)

    def _check_file_root(self, schemes: tuple) -> None:
        if "file" not in (s.lower() for s in schemes):
            raise ValueError("file_root confines local files: add 'file' to schemes, e.g. "
                             "schemes=('http', 'https', 'file')")
        root = os.fspath(self.file_root)
        if not os.path.isdir(root):
            raise ValueError(f"file_root {root!r} is not a directory")
        object.__setattr__(self, "file_root", os.path.abspath(root))

    def replace(self, **changes) -> "FetchConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
