"""`import tfeed` is quiet and never depends on tensorflow-io."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code, extra_path=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, ROOT) if p)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=120)


def test_import_survives_a_broken_tensorflow_io(tmp_path):
    fake = tmp_path / "tensorflow_io"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('tensorflow-io built for another TensorFlow')\n")
    result = _python("""
        import tensorflow as tf  # TensorFlow's own start-up lines are not tfeed's
        import sys
        sys.stderr.write("--- tfeed ---\\n")
        import tfeed
        tfeed.image_dataset_from_urls  # loads the whole pipeline
        print(tfeed.__version__, 'tensorflow_io' in sys.modules)
    """, extra_path=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [__import__("tfeed").__version__, "False"]
    assert result.stderr.split("--- tfeed ---", 1)[1].strip() == ""


def test_import_is_lazy_and_starts_no_threads():
    result = _python("""
        import sys, threading, tfeed
        print("tensorflow" in sys.modules, tfeed.__version__)
        tfeed.FetchConfig
        print(sorted(t.name for t in threading.enumerate()))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[0] == "False", "import tfeed alone does not load TensorFlow"
    assert "tfeed-fetch" not in result.stdout


def test_stage_names_are_functions_after_the_pipeline_loads():
    result = _python("""
        import tfeed
        tfeed.image_dataset_from_urls
        import tfeed.api, tfeed.augment
        constants = ("__version__", "PRIVATE_NETWORKS", "DEFAULT_DENY_NETWORKS")
        print(all(callable(getattr(tfeed, n)) for n in tfeed.__all__ if n not in constants))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
