"""File operations that a hostile file system cannot turn against tfeed.

Used by the disk cache, local-file reads and the native library cache: a
planted symlink, FIFO or device never makes tfeed overwrite another file,
block, or read without end.
"""

from __future__ import annotations

import os
import secrets
import stat
from typing import Optional

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class UnsafeDirectory(PermissionError):
    """A directory tfeed would trust is owned by another user or writable by others."""


def check_private_directory(path: str, what: str = "directory") -> None:
    """Raise UnsafeDirectory unless ``path`` is a directory owned by this user
    and not writable by group or others."""
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDirectory(f"{what} {path} is not a directory")
    if info.st_uid != os.geteuid():
        raise UnsafeDirectory(f"{what} {path} is owned by uid {info.st_uid}, not by this user "
                              f"(uid {os.geteuid()}): another user could plant files in it; use a directory of yours")
    if info.st_mode & 0o022:
        raise UnsafeDirectory(f"{what} {path} is writable by other users (mode {oct(info.st_mode & 0o777)}): "
                              f"run chmod go-w {path}, or use a directory of yours")


def make_private_directory(path: str, what: str = "directory") -> None:
    """Create ``path`` (and parents) with mode 0700 if missing, then check it."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    check_private_directory(path, what)


def read_regular(path: str, max_bytes: int, *, follow: bool = False) -> Optional[bytes]:
    """The bytes of the regular file ``path``, or None when it holds more than
    ``max_bytes``.  Opened without blocking (a FIFO never hangs) and, unless
    ``follow``, without following a symlink.  OSError (``EISDIR``-like
    ``IsADirectoryError`` for a non-regular file) for what cannot be read."""
    flags = _READ_FLAGS if not follow else _READ_FLAGS & ~os.O_NOFOLLOW
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IsADirectoryError(f"{path} is not a regular file")
        if info.st_size > max_bytes:
            return None
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks) if size <= max_bytes else None
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a new file of an unpredictable name
    (O_EXCL | O_NOFOLLOW, mode 0600) renamed into place."""
    tmp = f"{path}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, _CREATE_FLAGS, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
