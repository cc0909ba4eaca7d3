"""The address policy in aiohttp: checked where connections open.

Two hooks, both aiohttp's public API:

* :class:`PolicyResolver` drops denied addresses from every DNS answer (a
  name with only denied addresses raises :class:`~tfeed.addresses.BlockedAddress`);
* :func:`socket_factory` checks the address of every socket aiohttp creates,
  which also covers literal IPs (aiohttp never resolves those).

A redirect opens its connection through the same connector, so it meets the
same checks.  Nothing is sent to a denied address: the check runs before
``connect``.
"""

from __future__ import annotations

import socket
from typing import List, Optional

import aiohttp
from aiohttp.abc import AbstractResolver

from tfeed.addresses import AddressPolicy, BlockedAddress


class PolicyResolver(AbstractResolver):
    """aiohttp's default resolver, with ``policy``'s denied addresses removed
    from each answer.  Raises BlockedAddress when none is left."""

    def __init__(self, policy: AddressPolicy):
        self._policy = policy
        self._inner = aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> List[dict]:
        answers = await self._inner.resolve(host, port, family)
        allowed = [answer for answer in answers if self._policy.denies(answer["host"]) is None]
        if not allowed:
            first = answers[0]["host"]
            raise BlockedAddress(f"{first} ({host})", self._policy.denies(first))
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def socket_factory(policy: AddressPolicy):
    """An aiohttp ``socket_factory`` that refuses denied addresses before any connect."""

    def make(addr_info) -> socket.socket:
        family, type_, proto, _, address = addr_info
        policy.check(address[0])
        return socket.socket(family=family, type=type_, proto=proto)

    return make


def blocked(exc: BaseException) -> Optional[BlockedAddress]:
    """The BlockedAddress behind an aiohttp connector error, if that is what it is."""
    cause = getattr(exc, "os_error", None)
    return cause if isinstance(cause, BlockedAddress) else None


def connector_hooks(deny_networks) -> dict:
    """TCPConnector keyword arguments enforcing ``deny_networks`` ({} when empty)."""
    policy = AddressPolicy(deny_networks)
    if not policy:
        return {}
    return {"resolver": PolicyResolver(policy), "socket_factory": socket_factory(policy)}
