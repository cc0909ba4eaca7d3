"""The address policy (FetchConfig.deny_networks) in both engines.

Traffic goes to loopback only: the guard is shown by denying a loopback
address (127.0.0.2) and checking that a loopback server there receives no
request; the default deny list is checked by its value, never by sending.
"""

from __future__ import annotations

import pytest

import tfeed
from tfeed import contract
from tfeed.addresses import AddressPolicy
from tfeed.testing import ImageServer

DENIED = ("127.0.0.2/32",)


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "100.100.100.200", "10.0.0.1",
                                     "172.16.5.4", "192.168.1.1", "100.64.0.1", "fe80::1%eth0", "fc00::1",
                                     "::ffff:169.254.169.254", "::ffff:10.0.0.1", "0.0.0.0", "224.0.0.1", "::"])
def test_default_policy_denies_non_public_addresses(address):
    assert AddressPolicy(tfeed.FetchConfig().deny_networks).denies(address) is not None


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1", "93.184.216.34", "2606:4700::1"])
def test_default_policy_allows_loopback_and_public_addresses(address):
    assert AddressPolicy(tfeed.FetchConfig().deny_networks).denies(address) is None


def test_private_networks_add_loopback_and_empty_allows_all():
    private = AddressPolicy(tfeed.PRIVATE_NETWORKS)
    assert private.denies("127.0.0.1") == "127.0.0.0/8" and private.denies("::1") == "::1/128"
    assert set(contract.DEFAULT_DENY_NETWORKS) | set(contract.LOOPBACK_NETWORKS) == set(tfeed.PRIVATE_NETWORKS)
    assert AddressPolicy(()).denies("169.254.169.254") is None


def test_config_refuses_bad_networks_and_proxies_with_a_policy():
    with pytest.raises(ValueError, match="not an IP network"):
        tfeed.FetchConfig(deny_networks=("10.0.0.0/33",))
    with pytest.raises(ValueError, match="trust_env"):
        tfeed.FetchConfig(trust_env=True)
    assert tfeed.FetchConfig(trust_env=True, deny_networks=()).deny_networks == ()


@pytest.fixture(scope="module")
def denied_server(small_images):
    with ImageServer(small_images, host="127.0.0.2") as srv:
        yield srv


@pytest.fixture(scope="module")
def allowed_server(small_images):
    with ImageServer(small_images, host="127.0.0.1") as srv:
        yield srv


def _run(urls, engine, deny_networks, ops=None):
    config = tfeed.FetchConfig(deny_networks=deny_networks, retries=2, backoff=0.01, deadline=20)
    ds = tfeed.image_dataset_from_urls(urls, labels=None, batch_size=None, image_size=(8, 8), shuffle=False,
                                       fetch_config=config, fetch_engine=engine)
    count = sum(1 for _ in ds)
    return count, ds.stats


@pytest.mark.parametrize("engine", ["python", "native"])
def test_denied_address_is_never_requested_in_any_form(engine, denied_server, allowed_server, small_images, request):
    if engine == "native":
        request.getfixturevalue("ops")
    name = sorted(small_images)[0]
    port = denied_server.port
    target = f"http://127.0.0.2:{port}/{name}"
    urls = [target,                                                      # direct
            f"http://2130706434:{port}/{name}",                          # the integer form of 127.0.0.2
            f"http://0x7f.0.0.2:{port}/{name}",                          # a mixed hex form
            allowed_server.url(name, location=target + "?via=redirect"),  # a redirect from an allowed host
            allowed_server.url(name, n=engine)]                          # allowed: still fetched
    denied_server.reset_counts()
    count, stats = _run(urls, engine, DENIED)
    assert count == 1
    assert stats.snapshot()["failures"] == {"blocked_address": 4}
    assert denied_server.request_count() == 0
    details = [f.detail for f in stats.failed_urls(10)]
    assert all("127.0.0.2" in detail and "deny_networks" in detail for detail in details), details


@pytest.mark.parametrize("engine", ["python", "native"])
def test_hostname_resolving_to_a_denied_address_is_blocked(engine, allowed_server, small_images, request):
    if engine == "native":
        request.getfixturevalue("ops")
    name = sorted(small_images)[1]
    before = allowed_server.request_count(name)
    count, stats = _run([f"http://localhost:{allowed_server.port}/{name}?n=host-{engine}"], engine,
                        tfeed.PRIVATE_NETWORKS)
    assert count == 0
    assert stats.snapshot()["failures"] == {"blocked_address": 1}
    assert allowed_server.request_count(name) == before
