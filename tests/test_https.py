"""https with a real TLS server (nginx) and a private CA made by trustme, on both fetch engines."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import tfeed
from tfeed import kernels as native
from tfeed.testing import NginxServer, write_images

trustme = pytest.importorskip("trustme")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINES = ["python", pytest.param("native", marks=pytest.mark.skipif(not native.available(),
                                                                      reason="native op unavailable"))]
FAST = tfeed.FetchConfig(connect_timeout=5, read_timeout=5, deadline=20, backoff=0.01, max_backoff=0.05)


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory):
    """``(CA bundle path, certificate chain path, key path)`` for 127.0.0.1 and localhost."""
    directory = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    ca_file, chain, key = directory / "ca.pem", directory / "chain.pem", directory / "key.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    certificate.private_key_pem.write_to_path(str(key))
    with open(chain, "wb") as out:
        for blob in certificate.cert_chain_pems:
            out.write(blob.bytes())
    return str(ca_file), str(chain), str(key)


@pytest.fixture(scope="module")
def https_server(small_images, private_ca, tmp_path_factory):
    root = tmp_path_factory.mktemp("https-root")
    names = sorted(small_images)[:10]
    write_images({name: small_images[name] for name in names}, root)
    _, chain, key = private_ca
    with NginxServer(root, tls=(chain, key)) as server:
        yield server, names


def read(server, names, engine, config):
    dataset = tfeed.image_dataset_from_urls([(server.url(name), i) for i, name in enumerate(names)],
                                            image_size=(16, 16), batch_size=None, labels=None, shuffle=False,
                                            fetch_engine=engine, fetch_config=config)
    return sum(1 for _ in dataset), dataset.stats


@pytest.mark.parametrize("engine", ENGINES)
def test_https_with_a_private_ca_delivers_every_image(https_server, private_ca, engine):
    server, names = https_server
    assert server.base_url.startswith("https://")
    count, stats = read(server, names, engine, FAST.replace(ca_file=private_ca[0]))
    assert count == stats.snapshot()["delivered"] == len(names) and stats.snapshot()["failed"] == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_an_untrusted_certificate_counts_as_tls_without_retries(https_server, engine):
    server, names = https_server
    count, stats = read(server, names, engine, FAST)
    assert count == 0  # the system's CAs do not know trustme's
    snapshot = stats.snapshot()
    assert snapshot["failures"] == {"tls": len(names)} and snapshot["retries"] == 0
    assert all("certificate" in failure.detail.lower() for failure in stats.failed_urls())


@pytest.mark.parametrize("engine", ENGINES)
def test_verify_tls_false_accepts_any_certificate(https_server, engine):
    server, names = https_server
    count, stats = read(server, names, engine, FAST.replace(verify_tls=False))
    assert count == len(names) and stats.snapshot()["failed"] == 0


def test_ca_file_must_exist(tmp_path):
    with pytest.raises(ValueError, match="ca_file"):
        tfeed.FetchConfig(ca_file=str(tmp_path / "missing.pem"))


def test_warm_command_takes_ca_file_and_insecure(https_server, private_ca, tmp_path):
    server, names = https_server
    listing = tmp_path / "urls.txt"
    listing.write_text("".join(f"{server.url(name)}\n" for name in names))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="2")

    def warm(*options, cache="c"):
        command = [sys.executable, "-m", "tfeed", "warm", str(listing), "--cache-dir", str(tmp_path / cache),
                   "--no-progress", *options]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)

    untrusted = warm(cache="untrusted")
    assert untrusted.returncode == 1 and json.loads(untrusted.stdout)["failures"] == {"tls": len(names)}
    trusted = warm("--ca-file", private_ca[0])
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(trusted.stdout)["fetched"] == len(names)
    insecure = warm("--insecure", cache="insecure")
    assert insecure.returncode == 0 and json.loads(insecure.stdout)["fetched"] == len(names)
    missing = warm("--ca-file", str(tmp_path / "missing.pem"))
    assert missing.returncode == 2 and "ca_file" in missing.stderr
