"""Make TensorFlow's tf.data service servers listen on one address.

TensorFlow's dispatcher and worker always bind the wildcard address (every
interface) and offer no option to change it.  ``tfeed service`` therefore
runs with a tiny preloaded library (``bind_host.c``, compiled here on first
use with the system C compiler) that turns a wildcard ``bind`` into a bind to
``--host`` (127.0.0.1 by default).  :func:`listen_only_on` re-executes the
command (same PID) with that library preloaded.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from tfeed.safefs import check_private_directory

SOURCE = Path(__file__).resolve().parent / "bind_host.c"
HOST_VARIABLE = "TFEED_BIND_HOST"
WILDCARDS = ("0.0.0.0", "::")


class BindShimError(RuntimeError):
    """The bind library cannot be built (no C compiler) or loaded."""


def check_host(host: str) -> str:
    """``host`` as a numeric IP string; ValueError for a name or a malformed address."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"--host must be a numeric IP address (127.0.0.1, ::1, 0.0.0.0), got {host!r}") from None


def shim_path(cache_dir: Path = None) -> Path:
    """The compiled bind library, built when missing (in a private 0700 directory)."""
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else Path(os.path.expanduser("~/.cache/tfeed/bind"))
    directory = root / digest
    target = directory / "libtfeed_bind.so"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private_directory(str(directory))
    if target.is_file() and not target.is_symlink():
        return target
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise BindShimError("tfeed service needs a C compiler (cc) to listen on one address; install gcc, "
                            "or pass --host 0.0.0.0 to listen on every interface")
    fd, temporary = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(fd)
    done = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", temporary, str(SOURCE), "-ldl"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        os.unlink(temporary)
        raise BindShimError(f"compiling {SOURCE.name} failed: {done.stderr.strip()}")
    os.replace(temporary, target)
    return target


def listen_only_on(host: str, argv: Sequence[str]) -> None:
    """Return when this process already binds only ``host``; otherwise
    re-execute ``python -m tfeed *argv`` with the bind library preloaded
    (never returns then).  A wildcard ``host`` returns at once."""
    if host in WILDCARDS:
        return
    library = str(shim_path())
    preload = os.environ.get("LD_PRELOAD", "")
    if os.environ.get(HOST_VARIABLE) == host and library in preload.split(":"):
        return
    env = dict(os.environ, **{HOST_VARIABLE: host, "LD_PRELOAD": ":".join(p for p in (library, preload) if p)})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "tfeed", *argv], env)
