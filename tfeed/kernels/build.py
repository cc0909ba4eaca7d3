"""Compile tfeed's two op libraries against the installed TensorFlow.

``core`` (``core/*.cc`` -> ``tfeed_core_ops.so``): the pipeline's kernels,
which need TensorFlow only.  ``fetch`` (``fetch/*.cc`` ->
``tfeed_fetch_ops.so``): the libcurl fetch op; it needs libcurl's headers to
build (libcurl itself is opened at run time, see ``fetch/curl_loader.h``) and
``contract.h``, rendered from :mod:`tfeed.contract` by
:mod:`tfeed.kernels.contract_header` into the build's own directory.

Each library lands in a cache directory keyed by TensorFlow version and a
hash of its sources, generated headers and flags, so it is built once per
TensorFlow install (and again when the sources or the contract change)::

    ~/.cache/tfeed/ops/<tf-version>-<hash>/tfeed_core_ops.so
    ~/.cache/tfeed/ops/<tf-version>-<hash>/tfeed_fetch_ops.so

Two processes never build the same library at once (a file lock), and a
half-written library is never loaded (built in a temporary directory, then
renamed).  Build both ahead of time with ``python -m tfeed.kernels.build``
(the two libraries build concurrently).

Each library is compiled as one translation unit that includes all its
sources (a "unity" build): parsing TensorFlow's headers costs ~10 s of CPU
per unit, so one unit per file took 130 s for both libraries on 2 cores, one
per library 30-45 s; one unit also lets the compiler inline across files.
The sources stay independent files (each compiles on its own; the tests
compile ``fetch/classify.cc`` and ``fetch/sniff.cc`` alone); helpers in their
anonymous namespaces must not share names across a library's files.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from tfeed import safefs
from tfeed.kernels import contract_header

HERE = Path(__file__).resolve().parent
SHARED = HERE / "shared"  # the image header parser, compiled into both libraries
INSTALL_HINT = "apt-get install g++ libcurl4-openssl-dev"
_COMPILE_FLAGS = ("-shared", "-fPIC", "-O3", "-std=c++17", "-Wno-deprecated-declarations")  # -O3: vectorised colour kernel
_TIMEOUT_S = 600


@dataclasses.dataclass(frozen=True)
class Library:
    """One op library: its sources, the headers generated for it, how it links."""

    name: str
    filename: str
    directory: Path
    libs: Tuple[str, ...] = ()
    generated: Tuple[Tuple[str, Callable[[], str]], ...] = ()  # (header name, render)
    install_hint: str = INSTALL_HINT
    needs_curl: bool = False
    shared: Tuple[Path, ...] = (SHARED,)  # directories of sources both libraries compile

    @property
    def sources(self) -> List[Path]:
        return sorted(self.directory.glob("*.cc")) + [p for d in self.shared for p in sorted(d.glob("*.cc"))]

    def inputs(self) -> List[Path]:
        """Every file whose bytes the library depends on."""
        return sorted([*self.directory.glob("*.cc"), *self.directory.glob("*.h"),
                       *(p for d in self.shared for p in [*d.glob("*.cc"), *d.glob("*.h")])])

    def render(self) -> Dict[str, str]:
        """The generated headers: name -> text."""
        return {name: render() for name, render in self.generated}

    @property
    def unity_name(self) -> str:
        return f"{self.name}_unity.cc"

    def unity_source(self) -> str:
        """One translation unit including every source (see the module doc)."""
        return "".join(f'#include "{source}"\n' for source in self.sources)


LIBRARIES: Dict[str, Library] = {
    "core": Library("core", "tfeed_core_ops.so", HERE / "core", libs=("-lpthread",),
                    generated=(("image_contract.h", contract_header.render_image),),
                    install_hint="apt-get install g++"),
    "fetch": Library("fetch", "tfeed_fetch_ops.so", HERE / "fetch", libs=("-ldl", "-lpthread"),
                     generated=(("contract.h", contract_header.render),
                                ("image_contract.h", contract_header.render_image)), needs_curl=True),
}


class BuildError(RuntimeError):
    """A library could not be built; the message says why and how to fix it.

    ``missing`` names an absent prerequisite (``"compiler"``,
    ``"libcurl headers"``), or is None for other failures.
    """

    def __init__(self, message: str, missing: Optional[str] = None):
        super().__init__(message)
        self.missing = missing


def default_cache_dir() -> Path:
    """``~/.cache/tfeed/ops``: where built libraries are kept by default."""
    return Path.home() / ".cache" / "tfeed" / "ops"


def library_path(cache_dir: Optional[os.PathLike] = None, compiler: str = "g++", library: str = "fetch") -> Path:
    """Where ``library`` (``"core"`` or ``"fetch"``) for this TensorFlow, source and compiler lives (built or not)."""
    import tensorflow as tf

    lib = _library(library)
    digest = hashlib.sha256(lib.name.encode() + b"\0")
    for path in lib.inputs():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for name, text in sorted(lib.render().items()):
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    digest.update("\0".join([compiler, tf.version.GIT_VERSION, *_flags(tf), *lib.libs]).encode())
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"{tf.__version__}-{digest.hexdigest()[:16]}" / lib.filename


def build(cache_dir: Optional[os.PathLike] = None, compiler: str = "g++", force: bool = False,
          library: str = "fetch") -> Path:
    """Return the path of the compiled ``library`` (``"core"`` or ``"fetch"``),
    compiling it first if needed.

    Raises :class:`BuildError` naming what is missing (compiler, libcurl
    headers) or the compiler's error.
    """
    lib = _library(library)
    target = library_path(cache_dir, compiler, library)
    if target.exists() and not force:
        return verified(target)
    compiler_path = shutil.which(compiler)
    if compiler_path is None:
        raise BuildError(f"no C++ compiler {compiler!r} on PATH; install one: {lib.install_hint}", "compiler")
    try:
        os.makedirs(target.parent, mode=0o700, exist_ok=True)
        safefs.check_private_directory(str(target.parent), "op cache directory")
    except OSError as exc:
        raise BuildError(f"cannot create the op cache {target.parent}: {exc}; pass cache_dir=") from exc
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same library
        if target.exists() and not force:
            return verified(target)
        build_dir = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
        try:
            os.replace(_compile(lib, compiler_path, build_dir), target)
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)
    return target


def verified(path: Path) -> Path:
    """``path`` once it is shown to be a library this user built: a regular
    file (not a symlink) owned by this user and writable by no one else, in a
    directory of the same kind.  Raises BuildError otherwise (a library planted
    at the expected path is never loaded)."""
    try:
        safefs.check_private_directory(str(path.parent), "op cache directory")
        info = os.lstat(path)
    except OSError as exc:
        raise BuildError(f"refusing to load {path}: {exc}") from None
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise BuildError(f"refusing to load {path}: not a regular file owned by this user and writable only by it; "
                         "delete it, or pass cache_dir=")
    return path


def build_all(cache_dir: Optional[os.PathLike] = None, compiler: str = "g++",
              force: bool = False) -> Dict[str, object]:
    """Build every library at once: name -> its path, or the :class:`BuildError` that stopped it."""
    def one(name):
        try:
            return build(cache_dir, compiler, force, name)
        except BuildError as exc:
            return exc

    with concurrent.futures.ThreadPoolExecutor(len(LIBRARIES)) as pool:
        return dict(zip(LIBRARIES, pool.map(one, LIBRARIES)))


def compile_command(library: str, compiler: str, build_dir: os.PathLike, output: os.PathLike) -> List[str]:
    """The compiler command line that builds ``library`` into ``output`` from
    the files :func:`build` writes into ``build_dir`` (the unity source and
    the generated headers)."""
    import tensorflow as tf

    lib = _library(library)
    build_dir = Path(build_dir)
    return [compiler, *_COMPILE_FLAGS, *tf.sysconfig.get_compile_flags(), "-I", str(build_dir / "include"),
            str(build_dir / lib.unity_name), "-o", str(output), *tf.sysconfig.get_link_flags(), *lib.libs]


def _library(name: str) -> Library:
    try:
        return LIBRARIES[name]
    except KeyError:
        raise ValueError(f"library must be one of {sorted(LIBRARIES)}, got {name!r}") from None


def _flags(tf) -> List[str]:
    return [*_COMPILE_FLAGS, *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]


def _compile(lib: Library, compiler: str, build_dir: Path) -> Path:
    """Compiles ``lib`` in ``build_dir``; returns the library built there."""
    include = build_dir / "include"
    include.mkdir()
    for name, text in lib.render().items():
        (include / name).write_text(text)
    (build_dir / lib.unity_name).write_text(lib.unity_source())
    output = build_dir / lib.filename
    done = _run(compile_command(lib.name, compiler, build_dir, output), compiler, lib)
    if done.returncode != 0:
        _raise(lib, done)
    return output


def _run(command: List[str], compiler: str, lib: Library) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except OSError as exc:
        raise BuildError(f"cannot run {compiler}: {exc}; install a compiler: {lib.install_hint}", "compiler") from exc


def _raise(lib: Library, done: subprocess.CompletedProcess) -> None:
    errors = done.stderr
    if lib.needs_curl and "curl/curl.h" in errors:
        raise BuildError(f"libcurl headers are missing (curl/curl.h); install them: {INSTALL_HINT}",
                         "libcurl headers")
    tail = "\n".join(line for line in errors.splitlines() if "error" in line.lower())[-2000:] or errors[-2000:]
    raise BuildError(f"building {lib.filename} from {lib.directory.name}/*.cc failed (exit {done.returncode}):\n"
                     f"{tail}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: build the libraries now; prints their paths."""
    parser = argparse.ArgumentParser(prog="python -m tfeed.kernels.build",
                                     description="Build tfeed's op libraries (core kernels, libcurl fetch op) "
                                                 "for the installed TensorFlow.")
    parser.add_argument("--cache-dir", default=None, help=f"where to keep the libraries (default {default_cache_dir()})")
    parser.add_argument("--compiler", default="g++")
    parser.add_argument("--library", choices=[*LIBRARIES, "all"], default="all")
    parser.add_argument("--force", action="store_true", help="rebuild even when a library exists")
    args = parser.parse_args(argv)
    if args.library == "all":
        results = build_all(args.cache_dir, compiler=args.compiler, force=args.force)
    else:
        try:
            results = {args.library: build(args.cache_dir, args.compiler, args.force, args.library)}
        except BuildError as exc:
            results = {args.library: exc}
    status = 0
    for name, result in results.items():
        if isinstance(result, BuildError):
            print(f"tfeed.kernels.build: {name}: {result}", file=sys.stderr)
            status = 1
        else:
            print(result)
    return status


if __name__ == "__main__":
    sys.exit(main())
