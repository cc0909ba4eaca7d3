"""On-disk cache of downloaded bytes, shared by epochs, runs and processes.

Layout: ``<dir>/<aa>/<sha256(url)>`` for bodies and ``...<sha256>.fail`` for
remembered permanent failures.  Keys are hashes of the URL, never paths built
from it.  A body file is ``MAGIC | length (8 bytes LE) | crc32 (4 bytes LE) |
body``; it is written to a temporary file and renamed into place, so a reader
sees either no entry or a complete one, even if the writer is killed.  An
entry whose length or checksum does not match is deleted and reported as a
miss.  Several processes may read and write one directory at once.

With ``max_bytes``, the least recently used entries (by modification time,
refreshed on every hit) are evicted when the cache grows past the cap (down to
90% of it).  The native fetch op reports what it wrote every ``max_bytes / 10``
bytes (checked after each group of 32), so with it the cache can pass the cap
by up to that much plus one group of bodies until the next check.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
import zlib
from typing import Callable, Dict, Optional

from tfeed import contract, safefs

MAGIC = contract.CACHE_MAGIC
_HEADER = struct.Struct(contract.CACHE_HEADER_FORMAT)
HEADER_BYTES = _HEADER.size
PERMANENT_REASONS = frozenset(contract.PERMANENT_REASONS)
_TMP_MAX_AGE_S = 3600.0
MAX_ENTRY_BYTES = 1 << 30  # a larger file in the cache directory is not an entry tfeed wrote
_MAX_REASON_BYTES = 64
_CLOCK_SKEW_S = 60.0  # a .fail marker dated further ahead than this is expired, not kept forever


class DiskCache:
    """Cache of URL -> bytes in ``directory``.

    max_bytes: evict least recently used entries above this total (None: no cap).
    remember_failures_s: how long a permanent failure (``PERMANENT_REASONS``)
        is remembered so later epochs skip the dead URL; 0 disables.
    """

    def __init__(self, directory: str, max_bytes: Optional[int] = None, remember_failures_s: float = 86400.0):
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be positive or None, got {max_bytes!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.max_bytes = max_bytes
        self.remember_failures_s = float(remember_failures_s)
        safefs.make_private_directory(self.directory, "cache directory")
        self._lock = threading.Lock()  # guards the two counters below
        self._evicting = threading.RLock()  # one eviction at a time
        self._approx_size: Optional[int] = None
        self._reported = 0  # bytes ever passed to grew(); lets evict() keep writes made during its scan
        self._corrupt_here = 0
        self._corrupt_sources: Dict[str, Callable[[], int]] = {}

    @property
    def corrupt_entries(self) -> int:
        """Entries found corrupt (bad header, length or CRC) and deleted, by this
        object or by an engine that reads the directory natively (see
        :meth:`add_corrupt_source`)."""
        return self._corrupt_here + sum(source() for source in self._corrupt_sources.values())

    def add_corrupt_source(self, name: str, source: Callable[[], int]) -> None:
        """Count ``source()`` (corrupt entries another reader deleted since now)
        in :attr:`corrupt_entries`; one source per ``name`` (a second is ignored)."""
        if name not in self._corrupt_sources:
            start = source()
            self._corrupt_sources[name] = lambda: source() - start

    # -- keys ------------------------------------------------------------
    def path_for(self, url: str) -> str:
        digest = hashlib.sha256(url.encode("utf-8")).hexdigest()
        return os.path.join(self.directory, digest[:2], digest)

    # -- bodies ----------------------------------------------------------
    def get(self, url: str) -> Optional[bytes]:
        """The cached body of ``url``, or None (missing, or corrupt and now deleted)."""
        path = self.path_for(url)
        try:
            data = safefs.read_regular(path, MAX_ENTRY_BYTES)
        except FileNotFoundError:
            return None
        except OSError:  # a symlink, FIFO or device planted in the cache: not an entry
            data = None
        body = _unpack(data) if data is not None else None
        if body is None:
            self._discard(path)
            return None
        try:
            os.utime(path)  # refresh for LRU
        except OSError:
            pass
        return body

    def put(self, url: str, body: bytes) -> None:
        """Store ``body`` atomically (temporary file + rename)."""
        path = self.path_for(url)
        data = _HEADER.pack(MAGIC, len(body), zlib.crc32(body)) + body
        _atomic_write(path, data)
        self.grew(len(data))

    # -- remembered failures ---------------------------------------------
    def remember_failure(self, url: str, reason: str) -> None:
        """Remember a permanent failure (other reasons are ignored)."""
        if reason in PERMANENT_REASONS and self.remember_failures_s > 0:
            _atomic_write(self.path_for(url) + ".fail", reason.encode())

    def remembered_failure(self, url: str) -> Optional[str]:
        """The reason ``url`` failed permanently within the remember window, or None."""
        if self.remember_failures_s <= 0:
            return None
        path = self.path_for(url) + ".fail"
        try:
            age = time.time() - os.lstat(path).st_mtime
            if age > self.remember_failures_s or age < -_CLOCK_SKEW_S:  # a future time expires too
                self._discard(path, corrupt=False)
                return None
            reason = (safefs.read_regular(path, _MAX_REASON_BYTES) or b"").decode()
        except (OSError, UnicodeDecodeError):
            return None
        return reason if reason in PERMANENT_REASONS else None

    # -- size cap --------------------------------------------------------
    def size(self) -> int:
        """Bytes of all entries (a directory scan)."""
        return sum(size for _, size, _ in self._entries())

    def evict(self, target_bytes: Optional[int] = None) -> int:
        """Delete least recently used entries until at most ``target_bytes``
        (default 90% of ``max_bytes``) remain; returns bytes freed.  Also
        removes temporary files left by killed writers.  Bytes reported to
        :meth:`grew` while the directory is scanned stay counted."""
        target = target_bytes if target_bytes is not None else int(0.9 * (self.max_bytes or 0))
        with self._evicting:
            with self._lock:
                reported_before = self._reported
            entries = sorted(self._entries())
            total = sum(size for _, size, _ in entries)
            freed = 0
            for _, size, path in entries:
                if total - freed <= target:
                    break
                self._discard(path, corrupt=False)
                freed += size
            with self._lock:
                self._approx_size = total - freed + (self._reported - reported_before)
        return freed

    def grew(self, nbytes: int) -> None:
        """Account ``nbytes`` added to the directory (by :meth:`put`, or by the
        native fetch op, which writes entries itself); evicts when past
        ``max_bytes``.  Thread-safe: writers that pass the cap together wait for
        one eviction and then see its result instead of each scanning the
        directory; a writer under the cap returns at once."""
        if self.max_bytes is None:
            return
        with self._lock:
            self._reported += nbytes
            if self._approx_size is not None:
                self._approx_size += nbytes
                if self._approx_size <= self.max_bytes:
                    return  # under the cap: no need to wait for an eviction in progress
        with self._evicting:
            with self._lock:
                if self._approx_size is None:
                    self._approx_size = self.size()
                over = self._approx_size > self.max_bytes
            if over:
                self.evict()

    def _entries(self):
        """``(mtime, size, path)`` of every entry; temporary files of writers
        dead for an hour are removed.  Files that vanish meanwhile (another
        process evicting, a writer renaming) are skipped."""
        now = time.time()
        for shard in os.scandir(self.directory):
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard.path):
                try:
                    info = entry.stat()
                except FileNotFoundError:
                    continue
                if ".tmp" in entry.name:
                    if now - info.st_mtime > _TMP_MAX_AGE_S:
                        self._discard(entry.path, corrupt=False)
                    continue
                yield info.st_mtime, info.st_size, entry.path

    def _discard(self, path: str, corrupt: bool = True) -> None:
        if corrupt:
            self._corrupt_here += 1
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def _unpack(data: bytes) -> Optional[bytes]:
    if len(data) < _HEADER.size:
        return None
    magic, length, crc = _HEADER.unpack_from(data)
    body = data[_HEADER.size:]
    if magic != MAGIC or length != len(body) or zlib.crc32(body) != crc:
        return None
    return body


def _atomic_write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    safefs.write_atomic(path, data)
