"""Hostile inputs against both engines, the cache and the library loader:
local files that block or never end, redirects to other protocols, URLs the
engines could read differently, files planted in the cache.  Loopback only."""

from __future__ import annotations

import os
import threading
import time

import pytest

import tfeed
from tfeed import safefs
from tfeed.fetching.python.engine import FetchEngine
from tfeed.kernels import build
from helpers import fetch as native_fetch
from helpers import fresh

CONFIG = tfeed.FetchConfig(retries=0, deadline=10, read_timeout=5, adaptive=False,
                           schemes=("http", "https", "file"), max_bytes=4096)


def python_fetch(urls, config=CONFIG, cache=None):
    """``(body, reason, detail)`` per URL from the Python engine, in order."""
    engine = FetchEngine(config, tfeed.Stats(), seed=0, cache=cache)
    try:
        ticket = engine.submit(engine.new_run(), urls, [0] * len(urls), ordered=True)
        results = engine.collect(ticket)
    finally:
        engine.close()
    return [(r.body, r.failure.reason if r.failure else "", r.failure.detail if r.failure else "") for r in results]


def both_engines(ops, urls, config=CONFIG):
    """Reasons per URL: {"python": [...], "native": [...]}."""
    native = [reason for _, reason, _, _ in native_fetch(ops, urls, config)]
    return {"python": [reason for _, reason, _ in python_fetch(urls, config)], "native": native}


@pytest.fixture()
def local_files(tmp_path, small_images):
    jpg = next(body for name, body in small_images.items() if name.endswith(".jpg") and len(body) < 4096)
    (tmp_path / "ok.jpg").write_bytes(jpg)
    (tmp_path / "big.jpg").write_bytes(jpg + b"\0" * 5000)
    os.mkfifo(tmp_path / "fifo.jpg")
    (tmp_path / "dir.jpg").mkdir()
    return tmp_path


def test_local_files_only_regular_and_bounded_in_both_engines(ops, local_files):
    urls = [str(local_files / "ok.jpg"), str(local_files / "fifo.jpg"), "/dev/zero",
            "file://" + str(local_files / "dir.jpg"), str(local_files / "big.jpg")]
    expected = ["", "read_error", "read_error", "read_error", "too_large"]
    assert both_engines(ops, urls) == {"python": expected, "native": expected}


def test_redirects_to_other_protocols_are_not_followed(ops, server, small_images):
    name = sorted(small_images)[0]
    urls = [fresh(server, name, location=target) for target in
            ("ftp://127.0.0.1:1/x.jpg", "gopher://127.0.0.1:1/x", "dict://127.0.0.1:1/x", "file:///etc/passwd")]
    reasons = both_engines(ops, urls, CONFIG.replace(schemes=("http", "https")))
    assert reasons == {"python": ["invalid_url"] * 4, "native": ["invalid_url"] * 4}


def test_engines_agree_on_spaces_nul_bytes_and_numeric_hosts(ops, server, small_images):
    name = sorted(small_images)[0]
    base = server.url(name)
    raw = [base.replace(name, "a b.jpg"), base + "\0.png", base + "\n", " " + base,
           base.replace("127.0.0.1", "2130706433"), base.replace("127.0.0.1", "127.1")]
    assert both_engines(ops, raw) == {"python": ["invalid_url"] * 6, "native": ["invalid_url"] * 6}
    for engine in ("python", "native"):  # the source stage normalises before either engine sees them
        ds = tfeed.image_dataset_from_urls([" " + base + "?x=a b ", base + "\0.png"], labels=None, batch_size=None,
                                           image_size=(8, 8), shuffle=False, fetch_engine=engine)
        assert sum(1 for _ in ds) == 1
        assert ds.stats.snapshot()["failures"] == {"invalid_url": 1}


# -- the cache -------------------------------------------------------------------------------

def test_cache_directories_are_private_and_foreign_ones_refused(tmp_path):
    cache = tfeed.DiskCache(str(tmp_path / "c"))
    cache.put("http://127.0.0.1/a.jpg", b"x")
    assert os.stat(tmp_path / "c").st_mode & 0o777 == 0o700
    assert os.stat(os.path.dirname(cache.path_for("http://127.0.0.1/a.jpg"))).st_mode & 0o777 == 0o700
    os.chmod(tmp_path / "c", 0o777)
    with pytest.raises(safefs.UnsafeDirectory, match="writable by other users"):
        tfeed.DiskCache(str(tmp_path / "c"))
    if os.geteuid() == 0:  # only root can give a directory away
        os.chmod(tmp_path / "c", 0o700)
        os.chown(tmp_path / "c", 65534, 65534)
        with pytest.raises(safefs.UnsafeDirectory, match="owned by uid 65534"):
            tfeed.DiskCache(str(tmp_path / "c"))


def test_planted_cache_files_are_never_followed(tmp_path):
    cache = tfeed.DiskCache(str(tmp_path / "c"))
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    urls = [f"http://127.0.0.1/{i}.jpg" for i in range(3)]
    paths = [cache.path_for(url) for url in urls]
    for path in paths:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(victim, paths[0])            # a symlink entry
    os.mkfifo(paths[1])                     # a FIFO entry: must not hang
    os.symlink("/dev/zero", paths[2])       # an endless entry
    assert [cache.get(url) for url in urls] == [None, None, None]
    for old_name in (f"{paths[0]}.{os.getpid()}.0.tmp", paths[0] + ".tmp"):  # predictable names of old versions
        os.symlink(victim, old_name)
    cache.put(urls[0], b"new body")
    assert victim.read_bytes() == b"precious" and cache.get(urls[0]) == b"new body"


def test_future_fail_markers_expire(tmp_path):
    cache = tfeed.DiskCache(str(tmp_path / "c"))
    url = "http://127.0.0.1/gone.jpg"
    cache.remember_failure(url, "http_404")
    assert cache.remembered_failure(url) == "http_404"
    future = time.time() + 10 * 365 * 86400
    os.utime(cache.path_for(url) + ".fail", (future, future))
    assert cache.remembered_failure(url) is None
    assert not os.path.exists(cache.path_for(url) + ".fail")


def test_native_cache_reads_only_regular_entries_and_expires_future_markers(ops, server, small_images, tmp_path):
    cache = tfeed.DiskCache(str(tmp_path / "c"))
    name = sorted(small_images)[0]
    fifo_url, marked_url = fresh(server, name), fresh(server, name)
    for url in (fifo_url, marked_url):
        os.makedirs(os.path.dirname(cache.path_for(url)), exist_ok=True)
    os.mkfifo(cache.path_for(fifo_url))
    marker = cache.path_for(marked_url) + ".fail"
    with open(marker, "w") as handle:
        handle.write("http_404")
    future = time.time() + 10 * 365 * 86400
    os.utime(marker, (future, future))
    attrs = dict(cache_dir=cache.directory, remember_failures_s=86400.0)
    results = native_fetch(ops, [fifo_url, marked_url], CONFIG, **attrs)
    assert [(reason, attempts) for _, reason, attempts, _ in results] == [("", 1), ("", 1)]  # both downloaded
    assert os.path.isfile(cache.path_for(fifo_url)) and not os.path.islink(cache.path_for(fifo_url))


def test_a_planted_library_is_never_loaded(tmp_path):
    planted = tmp_path / "ops" / "lib.so"
    planted.parent.mkdir(mode=0o700)
    planted.write_bytes(b"\x7fELF not really")
    os.chmod(planted, 0o666)
    with pytest.raises(build.BuildError, match="refusing to load"):
        build.verified(planted)
    os.chmod(planted, 0o600)
    assert build.verified(planted) == planted
    os.chmod(planted.parent, 0o777)
    with pytest.raises(build.BuildError, match="refusing to load"):
        build.verified(planted)


def test_build_refuses_a_library_planted_at_its_path(tmp_path):
    target = build.library_path(tmp_path, library="core")
    target.parent.mkdir(parents=True, mode=0o700)
    target.write_bytes(b"\x7fELF planted")
    os.chmod(target, 0o664)  # group-writable: someone else could have written it
    with pytest.raises(build.BuildError, match="refusing to load"):
        build.build(tmp_path, library="core")


# -- memory: max_in_flight_bytes in the native engine -------------------------------------------

def _requests_started_while_a_body_is_held(ops, server, names, budget):
    """Batch A: one image (finished, its bytes held in A's outputs) and one URL that hangs until
    read_timeout; batch B starts meanwhile.  Returns how many of B's URLs the server saw while A
    still held its bytes (A's hanging request open), and every reason."""
    config = tfeed.FetchConfig(retries=0, read_timeout=2.5, deadline=20, adaptive=False, max_in_flight_bytes=budget)
    held, hanging, *later = names
    a_urls = [fresh(server, held), fresh(server, hanging, hang=1)]
    b_urls = [fresh(server, name) for name in later]
    before = {name: server.request_count(name) for name in names}
    results = {}
    a = threading.Thread(target=lambda: results.__setitem__("a", native_fetch(ops, a_urls, config)))
    a.start()
    while server.request_count(hanging) == before[hanging] or server.request_count(held) == before[held]:
        time.sleep(0.05)
    b = threading.Thread(target=lambda: results.__setitem__("b", native_fetch(ops, b_urls, config)))
    b.start()
    time.sleep(1.0)  # B's requests, if admitted, reach a loopback server well within this
    seen = sum(server.request_count(name) - before[name] for name in later)
    a_still_hanging = a.is_alive()
    a.join()
    b.join()
    reasons = [reason for _, reason, _, _ in results["a"] + results["b"]]
    return seen, a_still_hanging, reasons


def test_native_engine_pauses_new_requests_at_max_in_flight_bytes(ops, server, small_images):
    names = sorted(small_images)[10:15]
    seen, hanging, reasons = _requests_started_while_a_body_is_held(ops, server, names, budget=512 * 2**20)
    assert hanging and seen == 3 and reasons == ["", "timeout", "", "", ""]  # the control: B runs at once
    seen, hanging, reasons = _requests_started_while_a_body_is_held(ops, server, names, budget=1)
    assert hanging and seen == 0 and reasons == ["", "timeout", "", "", ""]  # B waited, then every URL ran


def _python_requests_started_during_a_slow_body(server, names, budget):
    """The Python engine: URL A's 3,000-byte body drips in over ~3 s (partial bytes held); URLs B
    are submitted once A's first bytes are held.  Returns how many B requests the server saw while A was still
    arriving, and the reasons."""
    config = tfeed.FetchConfig(retries=0, read_timeout=5, deadline=20, adaptive=False, max_in_flight_bytes=budget)
    slow, later = "blob", names
    engine = FetchEngine(config, tfeed.Stats(), seed=0)
    try:
        run = engine.new_run()
        before = {name: server.request_count(name) for name in [slow, *later]}
        a = engine.submit(run, [fresh(server, slow, size=3000, drip=0.1, chunk=100)], [0], ordered=True)
        while engine._held_bytes == 0:  # A's first bytes arrived and are held (a busy machine may take a while)
            time.sleep(0.01)
        b = engine.submit(run, [fresh(server, name) for name in later], [0] * len(later), ordered=True)
        time.sleep(1.0)  # B's requests, if started, reach a loopback server well within this
        seen = sum(server.request_count(name) - before[name] for name in later)
        results = engine.collect(a) + engine.collect(b)
    finally:
        engine.close()
    return seen, [r.failure.reason if r.failure else "" for r in results]


def test_python_engine_counts_partial_bodies_against_max_in_flight_bytes(server, small_images):
    names = sorted(small_images)[20:23]
    assert _python_requests_started_during_a_slow_body(server, names, 512 * 2**20) == (3, ["", "", "", ""])
    assert _python_requests_started_during_a_slow_body(server, names, 1) == (0, ["", "", "", ""])
