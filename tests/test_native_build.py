"""Building the native op library (tfeed.kernels.build) and the fallback when it cannot be built:
a missing compiler and missing libcurl headers are reported with the fix, a second builder waits
for the first under the lock, and import never breaks (one warning, nothing built)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from tfeed.kernels import build as native_build


# -- build and fallback ----------------------------------------------------------------

def test_build_reports_a_missing_compiler(tmp_path):
    with pytest.raises(native_build.BuildError, match="apt-get install") as info:
        native_build.build(tmp_path, compiler=str(tmp_path / "no-such-g++"))
    assert info.value.missing == "compiler"


def test_build_reports_missing_curl_headers(tmp_path):
    fake = tmp_path / "fake-g++"
    fake.write_text("#!/bin/sh\necho 'curl_loader.h:11:10: fatal error: curl/curl.h: No such file or directory' >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    with pytest.raises(native_build.BuildError, match="libcurl4-openssl-dev") as info:
        native_build.build(tmp_path, compiler=str(fake))
    assert info.value.missing == "libcurl headers"


def test_build_waits_for_another_builder(tmp_path):
    """A second process finds the library the first one built under the lock."""
    target = native_build.library_path(tmp_path)
    target.parent.mkdir(parents=True)
    result = {}
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        builder = threading.Thread(target=lambda: result.update(path=native_build.build(tmp_path)))
        builder.start()
        time.sleep(0.3)
        assert builder.is_alive()  # blocked on the lock, not compiling
        target.write_bytes(b"built by the other process")
    builder.join(timeout=30)
    assert result["path"] == target and target.read_bytes() == b"built by the other process"


def test_fallback_warns_once_and_never_breaks_import(tmp_path):
    script = textwrap.dedent(f"""
        import os, warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            import tfeed, tfeed.kernels
            assert os.listdir({str(tmp_path)!r}) == [], "import built something"
            first = tfeed.kernels.load({str(tmp_path)!r}, compiler="/nonexistent/g++")
            second = tfeed.kernels.load({str(tmp_path)!r}, compiler="/nonexistent/g++")
            available = tfeed.kernels.available({str(tmp_path)!r}, compiler="/nonexistent/g++")
        mine = [w for w in caught if issubclass(w.category, tfeed.kernels.NativeUnavailableWarning)]
        assert first is None and second is None and available is False
        assert len(mine) == 1, [str(w.message) for w in mine]
        assert "apt-get install g++ libcurl4-openssl-dev" in str(mine[0].message)
        print("OK")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]
