"""notebooks/explore.ipynb runs top to bottom in a real Jupyter kernel of this environment's Python."""

from __future__ import annotations

import json
import os
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "explore.ipynb")
KERNEL = "tfeed-test-python"


@pytest.fixture
def kernel_of_this_python(tmp_path, monkeypatch):
    """A kernelspec that starts ``sys.executable`` (never a python3 kernel found elsewhere on the machine)."""
    spec = tmp_path / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tfeed test", "language": "python",
        "env": {"PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "TF_CPP_MIN_LOG_LEVEL": "2"},
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    return KERNEL


def test_explore_notebook_executes(kernel_of_this_python):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    probe = nbformat.v4.new_code_cell("import sys; print(sys.executable)")
    notebook.cells.insert(0, probe)
    client = nbclient.NotebookClient(notebook, kernel_name=kernel_of_this_python, timeout=180,
                                     resources={"metadata": {"path": os.path.join(ROOT, "notebooks")}})
    client.execute()  # raises CellExecutionError on the first failing cell

    assert probe.outputs[0]["text"].strip() == sys.executable
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.get("output_type") == "error"]
    pictures = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(pictures) >= 2  # the batch grid and the failure gallery (more with tfeed.augment)
    text = "".join(output.get("text", "") for output in outputs)
    assert "classes: ['circle', 'square', 'triangle']" in text
    markdown = "".join(output.get("data", {}).get("text/markdown", "") for output in outputs)
    assert "| delivered | failed |" in markdown
    # the broken URLs are split between training and validation by URL hash (port included): both subsets are read
    for reason in ("http_404", "truncated", "not_image"):
        assert f"| {reason} |" in markdown
