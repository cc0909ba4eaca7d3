"""glibc's malloc thresholds after a pipeline starts (tfeed.malloc), in fresh processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import resource
    import numpy as np
    import tfeed
    from tfeed.testing import ImageServer, encode

    image = encode(np.zeros((32, 32, 3), np.uint8), "jpeg")
    with ImageServer({"a.jpg": image}) as srv:
        ds = tfeed.image_dataset_from_urls([srv.url("a.jpg")], labels=None, image_size=(8, 8), batch_size=1)
        assert len(list(ds)) == 1
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(100):  # a 4 MB buffer written and freed, as a decoded image is
        np.ones(1 << 22, np.uint8)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def page_faults(**env) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": ROOT, **env})
    assert out.returncode == 0, out.stderr[-3000:]
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_image_buffers_are_reused_not_mapped_afresh():
    """TensorFlow's from_generator freezes glibc's mmap threshold at 128 KB:
    every 4 MB buffer would be 1,024 fresh pages, each a page fault."""
    assert page_faults() < 5_000
    # TensorFlow's setting, left alone (the control): in one clean-clone run its process showed 300
    # faults, as if TensorFlow had not frozen the thresholds there; a second process shows the freeze
    controls = [page_faults(TFEED_MALLOC_THRESHOLDS="0")]
    if controls[0] <= 50_000:
        controls.append(page_faults(TFEED_MALLOC_THRESHOLDS="0"))
    assert max(controls) > 50_000
