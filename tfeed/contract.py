"""The fetch contract: the rules both engines follow, defined once.

The Python engine reads these values directly; the native op includes a C++
header generated from this module at build time (``contract.h``, see
:mod:`tfeed.kernels.contract_header`), and the header's text is part of the
library's build hash, so the two engines cannot drift apart.

Contents: every failure reason; which HTTP statuses are retried and the
backoff between attempts; the magic bytes that make a body an image; the
cache entry format and the failures it remembers; the symbolic links one
local path may follow under ``file_root``; the number of URLs per fetch call;
the per-host limiter's constants; the opt-out directives.
"""

from __future__ import annotations

import re

from tfeed import errors

# -- failure reasons (besides ``http_<code>`` for HTTP client errors) --------
REASONS = (errors.TIMEOUT, errors.CONNECTION, errors.DNS, errors.TOO_LARGE, errors.TRUNCATED,
           errors.TOO_MANY_REDIRECTS, errors.NOT_IMAGE, errors.UNSUPPORTED_FORMAT, errors.DECODE_ERROR,
           errors.INVALID_URL, errors.INVALID_LABEL, errors.READ_ERROR, errors.HTTP_5XX, errors.TLS,
           errors.RATE_LIMITED, errors.OPTED_OUT, errors.BLOCKED_ADDRESS, errors.OUTSIDE_FILE_ROOT)

# -- retries ---------------------------------------------------------------------
# A final status >= 500, or one of these, is retried (with backoff); other 4xx are not.
RETRYABLE_STATUSES = (408, 429)
FIRST_SERVER_ERROR = 500
# Backoff before retry n (1-based), seconds: ceiling = min(max_backoff, backoff * 2**(n-1));
# the delay is ceiling * BACKOFF_FIXED_SHARE + uniform(0, ceiling * (1 - BACKOFF_FIXED_SHARE))
# ("equal jitter": half fixed, half random).  Retry-After, when longer, wins.
BACKOFF_FIXED_SHARE = 0.5


def is_retryable_status(status: int) -> bool:
    """Whether a final HTTP error ``status`` is retried."""
    return status >= FIRST_SERVER_ERROR or status in RETRYABLE_STATUSES


def backoff_ceiling(attempt: int, backoff: float, max_backoff: float) -> float:
    """The longest wait before retry number ``attempt`` (1-based), seconds."""
    return min(max_backoff, backoff * (2 ** (attempt - 1)))


# -- what counts as an image -------------------------------------------------------
# (format, minimum body length, ((offset, bytes), ...)): all parts must match; the first
# matching row wins.  DECODABLE formats go to tf.io.decode_image (an animated WebP, told by
# its header, is transcoded instead); UNSUPPORTED ones count as ``unsupported_format`` (no
# installed decoder reads them); the others are transcoded to PNG (OpenCV; ICO in Python).
DECODABLE = ("jpeg", "png", "gif", "bmp", "webp")
UNSUPPORTED = ("heic",)
_HEIF = (b"ftypheic", b"ftypheix", b"ftyphevc", b"ftyphevx", b"ftypheim", b"ftypheis", b"ftyphevm", b"ftyphevs")
SIGNATURES = (
    ("jpeg", 3, ((0, b"\xff\xd8\xff"),)),
    ("png", 8, ((0, b"\x89PNG\r\n\x1a\n"),)),
    ("gif", 6, ((0, b"GIF87a"),)),
    ("gif", 6, ((0, b"GIF89a"),)),
    ("bmp", 27, ((0, b"BM"),)),
    ("webp", 12, ((0, b"RIFF"), (8, b"WEBP"))),
    ("tiff", 4, ((0, b"II*\x00"),)),
    ("tiff", 4, ((0, b"MM\x00*"),)),
    ("jp2", 12, ((0, b"\x00\x00\x00\x0cjP  "),)),
    ("jp2", 4, ((0, b"\xffO\xffQ"),)),
    *(("pnm", 3, ((0, b"P" + digit.encode() + space),)) for digit in "123456" for space in (b" ", b"\t", b"\n", b"\r")),
    ("avif", 12, ((4, b"ftypavif"),)),
    ("avif", 12, ((4, b"ftypavis"),)),
    *(("heic", 12, ((4, brand),)) for brand in _HEIF),
    ("heic", 12, ((4, b"ftypmif1"),)),  # the header parser tells an AVIF among these by its brands
    ("heic", 12, ((4, b"ftypmsf1"),)),
    ("ico", 22, ((0, b"\x00\x00\x01\x00"),)),
)

# -- image headers (kernels/shared/image_header.cc) ----------------------------------
# The header parser's format codes, in this order (0: no header recognised), shared by the
# fetch check and the decode stage's tfeed_image_header op.
HEADER_FORMATS = ("unknown", "jpeg", "png", "gif", "bmp", "webp", "tiff", "avif", "heic", "ico", "jp2", "pnm")
# A body whose header declares more pixels than this counts as too_large before any decoder
# allocates (90 MP: a 48 MP phone photo passes; a decoder needs 3-4 bytes per pixel).
DEFAULT_MAX_PIXELS = 90_000_000
# The bytes the parser reads from the front of an ISO-BMFF (AVIF/HEIC) body for its sizes.
BMFF_HEADER_WINDOW = 1 << 16
# The message with which tfeed_image_header(require_format=...) refuses a body of another format:
# the decode stage's JPEG-only attempt falls back to the general decode on this error only, so a
# JPEG that fails to decode is not decoded (and reported by libjpeg) a second time.
FORMAT_REFUSAL = "tfeed: not the required image format"

# -- the disk cache --------------------------------------------------------------------
# A body entry is CACHE_MAGIC | length (u64 LE) | crc32 (u32 LE) | body.
CACHE_MAGIC = b"TFC1"
CACHE_HEADER_FORMAT = "<4sQI"
CACHE_HEADER_BYTES = 16
# Failures remembered in the cache (``<entry>.fail``), so later epochs skip dead URLs.
PERMANENT_REASONS = ("http_404", "http_410", errors.NOT_IMAGE)

# -- the address policy (tfeed.addresses; the native op's address_policy.cc) ---------------
# Checked on the address a connection is about to open (after DNS, on every redirect), so
# literal IPs in any form, DNS answers and redirects are all covered.  An IPv4-mapped
# IPv6 address (::ffff:a.b.c.d) is checked as the IPv4 address it carries.
METADATA_NETWORKS = ("169.254.169.254/32", "fd00:ec2::254/128", "100.100.100.200/32")
LINK_LOCAL_NETWORKS = ("169.254.0.0/16", "fe80::/10")
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")
# Every range that is not the public internet (IANA special-purpose registries).
PRIVATE_NETWORKS = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", *LOOPBACK_NETWORKS[:1], *LINK_LOCAL_NETWORKS[:1],
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", *METADATA_NETWORKS[2:],
    "::/128", *LOOPBACK_NETWORKS[1:], "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
    "fc00::/7", *LINK_LOCAL_NETWORKS[1:], "fec0::/10", "ff00::/8", *METADATA_NETWORKS[1:2])
# The default: every non-global range except loopback (this machine, where tests and
# local image servers run).  deny_networks=PRIVATE_NETWORKS adds loopback; () allows all.
DEFAULT_DENY_NETWORKS = tuple(n for n in PRIVATE_NETWORKS if n not in LOOPBACK_NETWORKS)

# -- local files under FetchConfig.file_root (tfeed.safefs.open_beneath; the native op's file_root.cc) ---
# Symbolic links followed while resolving one path, at most (Linux's own limit, MAXSYMLINKS).
MAX_SYMLINKS = 40

# -- calls -----------------------------------------------------------------------------
GROUP_SIZE = 32  # URLs per fetch call (a group of the URL generator)

# -- per-host adaptive concurrency (tfeed.fetching.limiter; the native op's limiter.cc) ------------
# Each host's window of open requests starts small and triples per round trip while the
# host answers well ("slow start": +SLOW_START_GROWTH per success), then grows by about one
# per round trip.
# Overload -- 429, 503, a refused or reset connection, a connect timeout -- cuts it
# multiplicatively, at most once per window of requests; a latency well above the host's
# floor cuts it gently.  After a cut, the window remembers the level that overloaded the
# host and probes above it only after a quiet spell that doubles with each failed probe.
INITIAL_WINDOW = 4            # a burst of 4 new connections fits a 5-deep accept queue
# Slow start adds this many requests per success.  At 100 +- 20 ms, +1 (doubling) reached 256
# open requests after 0.76 s and the first batch after 0.47 s; +2 reaches 256 after 0.52 s and
# the first batch after 0.39 s (bench_fetch: 0.81x the decode ceiling against 0.78-0.79x).
# A larger opening burst is no way round: INITIAL_WINDOW 16 overflowed python -m http.server's
# accept queue (929 images/s against 1,106 in the first epoch, 1,137 against 1,294 in the second).
SLOW_START_GROWTH = 2
# Streams need no new connection, so no accept queue bounds how fast an HTTP/2 host's window may
# open: a success over a multiplexed connection in slow start opens it to at least this many
# streams, the concurrency RFC 9113 (5.1.2) asks servers to allow per connection and libcurl's
# default per-connection stream limit.  One h2 host at 100 ms, the client on one core: the first
# 320 images came after 1.07 s, against 1.18 s with slow start alone (0.79 s with the window open).
MULTIPLEXED_WINDOW = 100
MIN_WINDOW = 1
OVERLOAD_DECREASE = 0.7       # window *= this on overload
LATENCY_DECREASE = 0.9        # window *= this when latency > LATENCY_TOLERANCE * floor + LATENCY_SLACK_S
LATENCY_TOLERANCE = 4.0
# Latency alone never cuts below this (the opening window, which a 5-deep accept queue takes):
# on a busy client the latencies carry its own scheduling delays, and python -m http.server
# served 240 images/s at windows of 2-3 against 420-450 at a fixed 4 (server and client on a core each).
LATENCY_MIN_WINDOW = 4
SLOW_START_EXIT = 3.0         # the window grows only while smoothed latency <= this * floor + LATENCY_SLACK_S
LATENCY_SMOOTHING = 0.1       # weight of a new latency in the moving average the rules read
LATENCY_SLACK_S = 0.002       # ignores sub-millisecond jitter on fast local servers
LATENCY_SAMPLES = 64          # the floor is the minimum over the last 64-128 samples
PROBE_QUIET_S = 10.0          # first quiet spell before probing above a known overload level
MAX_PROBE_QUIET_S = 64.0
# A failed probe against a host that answers overload with Retry-After pauses that host's whole
# queue: its quiet spell is at least this many pauses, so failed probes cost it at most ~2% of its
# time (shedding origin, Retry-After 1: a probe 10 s after the first pause failed and paused the
# next epoch a second: 128 images/s in that epoch, 143 with probes 50 pauses apart).
PAUSE_PROBE_QUIET = 50.0
# A host's new connections get a connect timeout of this many times its latency floor
# (at least one round trip; a connection takes one, three with TLS 1.2), at least
# MIN_CONNECT_TIMEOUT_S, doubled per connect timeout since its last success, never above
# FetchConfig.connect_timeout.  A listener whose accept queue is full drops the SYN, and
# the kernel sends it again only after 1 s: python -m http.server (accept queue 5) stalled
# a third of 1,000-image epochs by 0.5-0.9 s that way; with 0.3 s timeouts none stalled,
# and 0.1 s kept 620-630 images/s where 0.3 s gave 470 (an http.server that had just served
# another client dropped 35-50 SYNs an epoch).  A connect timeout is overload: the URL is
# queued again and the window cut.
CONNECT_FLOOR_FACTOR = 4.0
MIN_CONNECT_TIMEOUT_S = 0.1
OVERLOAD_STATUSES = (429, 503)
PACE_RELAX = 0.995            # each start the pace held back narrows a 429-paced host's gap by this factor
PACE_RELAX_FIRST = 0.95       # ... until the second 429 (the first pace guesses from successes in slow start)
PACE_BACKOFF = 1.1            # each later 429 widens the gap by this factor (about 1 start in 20 answers 429)
PACE_MARGIN = 1.05            # the first 429 paces starts this much slower than the host's recent successes
# A host that answers nothing but overload is paused: Retry-After when given (capped at
# MAX_PAUSE_S), else exponential backoff with equal jitter from the config's backoff.
MAX_PAUSE_S = 300.0
HOST_PATIENCE_S = 300.0       # default FetchConfig.host_patience
# A URL shed more often than this while its host answered other requests in between is
# no longer taken for its host's load: its next overload answers are ordinary retryable
# failures (they spend its retries), so a URL that always answers 503 while its host
# serves others still ends.  (A host that answers nothing but overload is bounded by
# host_patience instead, and its URLs count as rate_limited.)
SHEDS_PER_URL = 10
# The limiter's constants, as the generated C++ header names them (kInitialWindow, ...).
LIMITER_CONSTANTS = ("INITIAL_WINDOW", "SLOW_START_GROWTH", "MULTIPLEXED_WINDOW", "MIN_WINDOW", "LATENCY_MIN_WINDOW",
                     "OVERLOAD_DECREASE", "LATENCY_DECREASE", "LATENCY_TOLERANCE",
                     "SLOW_START_EXIT", "LATENCY_SMOOTHING", "LATENCY_SLACK_S", "LATENCY_SAMPLES",
                     "PROBE_QUIET_S", "MAX_PROBE_QUIET_S", "PAUSE_PROBE_QUIET", "MAX_PAUSE_S", "HOST_PATIENCE_S",
                     "PACE_RELAX", "PACE_RELAX_FIRST", "PACE_BACKOFF", "PACE_MARGIN", "SHEDS_PER_URL",
                     "CONNECT_FLOOR_FACTOR", "MIN_CONNECT_TIMEOUT_S")


# -- the fetch loop's place in the scheduler (both engines' loop threads) --------------------
# Each engine's event loop thread runs SCHED_FIFO at the lowest real-time priority where the
# process may (CAP_SYS_NICE, or RLIMIT_RTPRIO >= 1), so it runs as soon as a response wakes it
# instead of waiting behind the decode threads (kernels/fetch/loop_priority.cc has the
# measurements).  Once per LOOP_CHECK_PERIOD_S it reads its own CPU time: above
# LOOP_MAX_REALTIME_SHARE of a core it becomes a fair thread for the next period, and returns
# to real time once under it, so it never holds a core.  LOOP_REALTIME_SWITCH=0 in the
# environment leaves real time out.
LOOP_REALTIME_SWITCH = "TFEED_LOOP_REALTIME"
LOOP_CHECK_PERIOD_S = 0.1
LOOP_MAX_REALTIME_SHARE = 0.5
LOOP_CONSTANTS = ("LOOP_CHECK_PERIOD_S", "LOOP_MAX_REALTIME_SHARE")


# -- crawler manners ------------------------------------------------------------
# With FetchConfig(respect_opt_out=True), a response whose X-Robots-Tag header holds one
# of these directives (for any user agent: "noai", "otherbot: noimageai") is not kept;
# the URL counts as opted_out.  Directives are the header's tokens, split at these
# separators and compared without case.
OPT_OUT_HEADER = "x-robots-tag"
OPT_OUT_DIRECTIVES = ("noai", "noimageai")
OPT_OUT_SEPARATORS = ",;: \t"
OPT_OUT_DETAIL = "X-Robots-Tag opts out of AI use (noai/noimageai)"


def opts_out(value: str) -> bool:
    """Whether one X-Robots-Tag header value carries an opt-out directive."""
    tokens = re.split("[" + re.escape(OPT_OUT_SEPARATORS) + "]+", value.lower())
    return any(token in OPT_OUT_DIRECTIVES for token in tokens)
