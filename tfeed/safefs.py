"""File operations that a hostile file system cannot turn against tfeed.

Used by the disk cache, local-file reads and the native library cache: a
planted symlink, FIFO or device never makes tfeed overwrite another file,
block, or read without end; and a local path under ``FetchConfig.file_root``
never reaches a file outside that directory (:func:`open_beneath`).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from typing import List, Optional, Union

from tfeed import contract

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_PATH_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class OutsideRoot(PermissionError):
    """A path that resolves outside the directory it is confined to."""


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


def read_regular(path: Union[str, bytes], max_bytes: int, *, follow: bool = False) -> Optional[bytes]:
    """The bytes of the regular file ``path``, or None when it holds more than
    ``max_bytes``.  Opened without blocking (a FIFO never hangs) and, unless
    ``follow``, without following a symlink.  OSError (``EISDIR``-like
    ``IsADirectoryError`` for a non-regular file) for what cannot be read."""
    flags = _READ_FLAGS if not follow else _READ_FLAGS & ~os.O_NOFOLLOW
    return _read_open(os.open(path, flags), path, max_bytes)


def read_beneath(root: str, path: bytes, max_bytes: int) -> Optional[bytes]:
    """:func:`read_regular` for a ``path`` confined to the directory ``root``
    (:func:`open_beneath`): OutsideRoot when it resolves elsewhere."""
    return _read_open(open_beneath(root, path), path, max_bytes)


def _read_open(fd: int, path, max_bytes: int) -> Optional[bytes]:
    """Read the open ``fd`` (closed here) if it is a regular file of at most ``max_bytes``."""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IsADirectoryError(f"{os.fsdecode(path)} is not a regular file")
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


def open_beneath(root: str, path: bytes) -> int:
    """A descriptor (``O_RDONLY | O_NONBLOCK``) of ``path`` if it resolves to a
    file beneath the directory ``root``; else OutsideRoot, and the file is never
    opened.  ``path`` is absolute or relative to the working directory.

    The path is resolved here, one component at a time from ``/``: each
    directory is opened ``O_PATH | O_NOFOLLOW`` relative to the descriptor of
    its parent, a symlink is read (``readlinkat``, at most
    ``contract.MAX_SYMLINKS`` per path) and its target resolved in its place
    (an absolute one from ``/`` again), ``..`` returns to the parent's
    descriptor (``/..`` is ``/``).  The file is beneath ``root`` when the
    directory it is opened in has ``root`` (same device and inode) among the
    directories the walk holds, so ``..``, percent-encoded dots, symlinks
    pointing out, another path to the same place and absolute paths elsewhere
    are all judged on where they lead.  A failure while the walk is outside
    ``root`` (a missing directory elsewhere, say) is OutsideRoot too, so a
    refused path says nothing about what exists outside.  Other failures are
    the OSError of the step.

    Why this and not the alternatives: ``realpath`` then ``open`` leaves a
    window in which a directory can be swapped for a symlink; ``openat2``
    with ``RESOLVE_BENEATH`` (Linux 5.6+) is race-free but refuses absolute
    symlinks that stay inside ``root``, is missing from Python's ``os`` and is
    blocked by some container seccomp profiles, so the two engines could
    disagree by kernel.  Each step here opens the very object it examined
    (``O_NOFOLLOW`` relative to a held descriptor), so a concurrent swap makes
    the step fail instead of escaping, with the same result on every POSIX
    system; the native op walks the same way (``file_root.cc``).
    """
    if b"\0" in path:
        raise ValueError("NUL byte in path")
    root_info = os.stat(root)
    root_id = (root_info.st_dev, root_info.st_ino)
    if not path.startswith(b"/"):
        path = os.fsencode(os.getcwd()) + b"/" + path
    pending = _components(path)
    stack: List[tuple] = []  # (fd, (dev, ino)) from / to the current directory
    try:
        _push(stack, os.open(b"/", _PATH_FLAGS))
        links = 0
        while pending:
            name = pending.pop(0)
            if name == b"..":
                if len(stack) > 1:
                    os.close(stack.pop()[0])
                continue
            inside = any(ident == root_id for _, ident in stack)
            top = stack[-1][0]
            try:
                info = os.stat(name, dir_fd=top, follow_symlinks=False)
                if stat.S_ISLNK(info.st_mode):
                    links += 1
                    if links > contract.MAX_SYMLINKS:
                        raise OSError(errno.ELOOP, "too many symbolic links", os.fsdecode(path))
                    target = os.readlink(name, dir_fd=top)
                    if target.startswith(b"/"):
                        while len(stack) > 1:
                            os.close(stack.pop()[0])
                    pending[:0] = _components(target)
                    continue
                if not pending:
                    if not inside:
                        raise OutsideRoot(f"{os.fsdecode(path)} is outside file_root {root}")
                    return os.open(name, _READ_FLAGS, dir_fd=top)
                _push(stack, os.open(name, _PATH_FLAGS, dir_fd=top))
            except OSError as exc:
                if inside or isinstance(exc, OutsideRoot):
                    raise
                raise OutsideRoot(f"{os.fsdecode(path)} is outside file_root {root}") from None
        raise OutsideRoot(f"{os.fsdecode(path)} names no file beneath file_root {root}")
    finally:
        for fd, _ in stack:
            os.close(fd)


def _components(path: bytes) -> List[bytes]:
    return [part for part in path.split(b"/") if part not in (b"", b".")]


def _push(stack: list, fd: int) -> None:
    try:
        info = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    stack.append((fd, (info.st_dev, info.st_ino)))


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
