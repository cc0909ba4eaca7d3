"""FetchConfig(file_root=...): local files confined to one directory tree, in
both engines, judged on where a path leads.  Real files, symlinks and FIFOs
in a temporary directory; nothing outside it is ever opened."""

from __future__ import annotations

import os
import urllib.parse

import pytest

import tfeed
from tfeed import contract, errors, safefs
from test_untrusted_inputs import both_engines, python_fetch
from helpers import fetch as native_fetch

OUTSIDE = errors.OUTSIDE_FILE_ROOT


@pytest.fixture()
def tree(tmp_path, small_images):
    """``tmp/root`` (the file root: ok.jpg, sub/, links) beside ``tmp/secret.jpg``, an image outside it."""
    jpg = next(body for name, body in sorted(small_images.items()) if name.endswith(".jpg") and len(body) < 4096)
    root = tmp_path / "root"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "ok.jpg").write_bytes(jpg)
    (root / "sub" / "deep" / "nested.jpg").write_bytes(jpg)
    (tmp_path / "secret.jpg").write_bytes(jpg)  # an image: read, it would be delivered
    os.symlink(tmp_path / "secret.jpg", root / "escape_abs.jpg")
    os.symlink("../secret.jpg", root / "escape_rel.jpg")
    os.symlink(tmp_path, root / "sub" / "up")
    os.symlink("deep/nested.jpg", root / "sub" / "inside_rel.jpg")
    os.symlink(root / "ok.jpg", root / "inside_abs.jpg")
    os.symlink("loop", root / "loop")
    os.mkfifo(tmp_path / "fifo.jpg")
    os.symlink(tmp_path / "fifo.jpg", root / "fifo_link.jpg")
    os.symlink(tmp_path, tmp_path.parent / (tmp_path.name + "-alias"))
    return tmp_path


def config(root, **changes):
    return tfeed.FetchConfig(retries=0, deadline=10, read_timeout=5, adaptive=False, max_bytes=4096,
                             schemes=("http", "https", "file"), file_root=str(root), **changes)


def file_url(path) -> str:
    return "file://" + urllib.parse.quote(str(path))


def test_paths_leading_out_of_the_root_are_refused_the_same_by_both_engines(ops, tree):
    root = tree / "root"
    cases = {
        str(tree / "secret.jpg"): OUTSIDE,                                 # an absolute path elsewhere
        file_url(tree / "secret.jpg"): OUTSIDE,
        str(root) + "/../secret.jpg": OUTSIDE,                             # ..
        "file://" + str(root) + "/%2e%2e/secret.jpg": OUTSIDE,             # percent-encoded dots
        "file://" + str(root) + "/sub/%2E%2E%2F%2E%2E/secret.jpg": OUTSIDE,  # and an encoded slash
        str(root / "escape_abs.jpg"): OUTSIDE,                             # symlinks pointing out
        str(root / "escape_rel.jpg"): OUTSIDE,
        str(root / "sub" / "up" / "secret.jpg"): OUTSIDE,                  # a symlinked directory out
        str(root / "fifo_link.jpg"): OUTSIDE,                              # never opened, so never blocks
        "/etc/passwd": OUTSIDE,
        "/nonexistent/dir/x.jpg": OUTSIDE,                                 # says nothing of what exists outside
        "../" * 30 + "etc/passwd": OUTSIDE,                                # relative, climbing past /
        str(root): OUTSIDE,                                                # the root is no file beneath itself
        "file://" + str(root / "ok.jpg") + "%00.png": errors.INVALID_URL,  # NUL: would open another file
    }
    urls = list(cases)
    expected = list(cases.values())
    assert both_engines(ops, urls, config(root)) == {"python": expected, "native": expected}


def test_files_beneath_the_root_are_delivered_by_both_engines(ops, tree):
    root = tree / "root"
    urls = [str(root / "ok.jpg"), file_url(root / "ok.jpg"), str(root / "sub" / "deep" / "nested.jpg"),
            str(root) + "/sub/../ok.jpg", "file://" + str(root) + "/sub/%2e%2e/ok.jpg",
            str(root / "sub" / "inside_rel.jpg"), str(root / "inside_abs.jpg"),
            str(root / "sub" / "up" / "root" / "ok.jpg"),              # out and back in: resolves beneath
            str(tree.parent / (tree.name + "-alias") / "root" / "ok.jpg"),  # another path to the root
            str(root / "missing.jpg"), str(root / "sub"), str(root / "loop")]
    expected = [""] * 9 + [errors.READ_ERROR] * 3
    assert both_engines(ops, urls, config(root)) == {"python": expected, "native": expected}
    body = (root / "ok.jpg").read_bytes()
    assert [b for b, _, _ in python_fetch(urls[:9], config(root))] == [body] * 9
    assert [b for b, _, _, _ in native_fetch(ops, urls[:9], config(root))] == [body] * 9


def test_a_relative_path_is_judged_from_the_working_directory(ops, tree, monkeypatch):
    monkeypatch.chdir(tree / "root" / "sub")
    urls = ["deep/nested.jpg", "../ok.jpg", "../../secret.jpg", "up/secret.jpg"]
    expected = ["", "", OUTSIDE, OUTSIDE]
    assert both_engines(ops, urls, config(tree / "root")) == {"python": expected, "native": expected}


def test_a_symlinked_root_and_too_many_links(ops, tree):
    os.symlink(tree / "root", tree / "root-link")
    chain = tree / "root" / "chain0"
    for i in range(contract.MAX_SYMLINKS + 1):  # chain0 -> chain1 -> ... -> ok.jpg: one link too many
        os.symlink(f"chain{i + 1}" if i < contract.MAX_SYMLINKS else "ok.jpg", tree / "root" / f"chain{i}")
    urls = [str(tree / "root" / "ok.jpg"), str(tree / "root-link" / "ok.jpg"), str(chain),
            str(tree / "root" / "chain1")]
    expected = ["", "", errors.READ_ERROR, ""]
    assert both_engines(ops, urls, config(tree / "root-link")) == {"python": expected, "native": expected}


def test_every_url_is_one_example_or_one_reason_through_the_dataset(tree):
    root = tree / "root"
    urls = [str(root / "ok.jpg"), str(root / "escape_rel.jpg"), str(tree / "secret.jpg"), str(root / "missing.jpg")]
    for engine in ("python", "native"):
        ds = tfeed.image_dataset_from_urls(urls, labels=None, batch_size=None, image_size=(8, 8), shuffle=False,
                                           fetch_engine=engine, fetch_config=config(root))
        assert sum(1 for _ in ds) == 1
        assert ds.stats.snapshot()["failures"] == {OUTSIDE: 2, errors.READ_ERROR: 1}


def test_file_root_is_checked_when_configured(tmp_path):
    with pytest.raises(ValueError, match="add 'file' to schemes"):
        tfeed.FetchConfig(file_root=str(tmp_path))
    with pytest.raises(ValueError, match="not a directory"):
        tfeed.FetchConfig(schemes=("file",), file_root=str(tmp_path / "missing"))
    assert tfeed.FetchConfig(schemes=("file",), file_root=".").file_root == os.getcwd()
    with pytest.raises(safefs.OutsideRoot):
        safefs.open_beneath(str(tmp_path), b"/etc/passwd")
