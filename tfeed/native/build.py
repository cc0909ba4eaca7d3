"""Compile the native fetch op against the installed TensorFlow.

The library lands in a cache directory keyed by TensorFlow version and a hash
of the source and flags, so it is built once per TensorFlow install::

    ~/.cache/tfeed/ops/<tf-version>-<hash>/tfeed_fetch_op.so

Two processes never build at once (a file lock), and a half-written library
is never loaded (compile to a temporary name, then rename).  Build ahead of
time with ``python -m tfeed.native.build``.

Needs a C++17 compiler and libcurl's headers (Debian: ``apt-get install g++
libcurl4-openssl-dev``).  libcurl itself is opened at run time (see
``fetch_op.cc``), so the library links against TensorFlow only.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

SOURCES = tuple(Path(__file__).with_name(name) for name in ("fetch_op.cc", "try_op.cc", "journal_op.cc",
                                                             "augment_op.cc"))
LIBRARY_NAME = "tfeed_fetch_op.so"
INSTALL_HINT = "apt-get install g++ libcurl4-openssl-dev"
_CXXFLAGS = ("-shared", "-fPIC", "-O3", "-std=c++17", "-Wno-deprecated-declarations")  # -O3: vectorised colour kernel


class BuildError(RuntimeError):
    """The op could not be built; the message says why and how to fix it.

    ``missing`` names an absent prerequisite (``"compiler"``,
    ``"libcurl headers"``), or is None for other failures.
    """

    def __init__(self, message: str, missing: Optional[str] = None):
        super().__init__(message)
        self.missing = missing


def default_cache_dir() -> Path:
    """``~/.cache/tfeed/ops``: where built libraries are kept by default."""
    return Path.home() / ".cache" / "tfeed" / "ops"


def library_path(cache_dir: Optional[os.PathLike] = None, compiler: str = "g++") -> Path:
    """Where the library for this TensorFlow, source and compiler lives (built or not)."""
    import tensorflow as tf

    flags = _flags(tf)
    digest = hashlib.sha256(b"".join(source.read_bytes() for source in SOURCES))
    digest.update("\0".join([compiler, tf.version.GIT_VERSION, *flags]).encode())
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"{tf.__version__}-{digest.hexdigest()[:16]}" / LIBRARY_NAME


def build(cache_dir: Optional[os.PathLike] = None, compiler: str = "g++", force: bool = False) -> Path:
    """Return the path of the compiled library, compiling it first if needed.

    Raises :class:`BuildError` naming what is missing (compiler, libcurl
    headers) or the compiler's error.
    """
    target = library_path(cache_dir, compiler)
    if target.exists() and not force:
        return target
    compiler_path = shutil.which(compiler)
    if compiler_path is None:
        raise BuildError(f"no C++ compiler {compiler!r} on PATH; install one: {INSTALL_HINT}", "compiler")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"cannot create the op cache {target.parent}: {exc}; pass cache_dir=") from exc
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same library
        if target.exists() and not force:
            return target
        fd, temp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            _compile(compiler_path, Path(temp))
            os.replace(temp, target)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
    return target


def compile_command(compiler: str, output: os.PathLike) -> List[str]:
    """The compiler command line that builds the library into ``output``."""
    import tensorflow as tf

    return [compiler, *_CXXFLAGS, *tf.sysconfig.get_compile_flags(), *map(str, SOURCES), "-o", str(output),
            *tf.sysconfig.get_link_flags(), "-ldl", "-lpthread"]


def _flags(tf) -> List[str]:
    return [*_CXXFLAGS, *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]


def _compile(compiler: str, output: Path) -> None:
    command = compile_command(compiler, output)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except OSError as exc:
        raise BuildError(f"cannot run {compiler}: {exc}; install a compiler: {INSTALL_HINT}", "compiler") from exc
    if done.returncode == 0:
        return
    errors = done.stderr
    if "curl/curl.h" in errors:
        raise BuildError(f"libcurl headers are missing (curl/curl.h); install them: {INSTALL_HINT}",
                         "libcurl headers")
    tail = "\n".join(line for line in errors.splitlines() if "error" in line.lower())[-2000:] or errors[-2000:]
    raise BuildError(f"compiling {', '.join(s.name for s in SOURCES)} failed (exit {done.returncode}):\n{tail}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: build the op now; prints the library path."""
    parser = argparse.ArgumentParser(prog="python -m tfeed.native.build",
                                     description="Build tfeed's native fetch op for the installed TensorFlow.")
    parser.add_argument("--cache-dir", default=None, help=f"where to keep the library (default {default_cache_dir()})")
    parser.add_argument("--compiler", default="g++")
    parser.add_argument("--force", action="store_true", help="rebuild even when a library exists")
    args = parser.parse_args(argv)
    try:
        path = build(args.cache_dir, compiler=args.compiler, force=args.force)
    except BuildError as exc:
        print(f"tfeed.native.build: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
