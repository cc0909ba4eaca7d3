"""The address policy: which IP addresses a fetch may connect to.

Both engines ask it about the address a connection is about to open -- after
DNS, on every redirect -- so every literal form of an IP, every DNS answer
(rebinding included) and every redirect meets the same check.  The Python
engine calls :meth:`AddressPolicy.denies`; the native op gets the same
networks as an attribute and applies the same rule (``address_policy.cc``).
The network lists are :mod:`tfeed.contract`'s.
"""

from __future__ import annotations

import errno
import ipaddress
from typing import Iterable, Optional, Tuple, Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class BlockedAddress(OSError):
    """Raised before a connection to a denied address is opened (errno EACCES)."""

    def __init__(self, address: str, network: str):
        super().__init__(errno.EACCES, f"address {address} is in denied network {network} (deny_networks)")
        self.address = address
        self.network = network


def parse_networks(networks: Iterable[str]) -> Tuple[str, ...]:
    """Normalised CIDR strings (``"10.0.0.0/8"``) for ``networks``.

    Accepts addresses (a /32 or /128) and networks; ValueError naming the
    entry that is neither (host bits set count as an error too).
    """
    if isinstance(networks, str):
        raise ValueError(f"deny_networks must be a sequence of networks, not the string {networks!r}")
    parsed = []
    for entry in networks:
        try:
            parsed.append(str(ipaddress.ip_network(str(entry).strip(), strict=True)))
        except ValueError as exc:
            raise ValueError(f"deny_networks entry {entry!r} is not an IP network: {exc}") from None
    return tuple(parsed)


class AddressPolicy:
    """Denies connections to addresses inside any of ``networks`` (CIDR strings)."""

    def __init__(self, networks: Iterable[str]):
        self._networks = [ipaddress.ip_network(n) for n in parse_networks(networks)]

    def __bool__(self) -> bool:
        return bool(self._networks)

    def denies(self, address: str) -> Optional[str]:
        """The denied network (CIDR string) containing ``address``, or None if allowed.

        ``address`` is a numeric IP as sockets see it (``"127.0.0.1"``,
        ``"fe80::1%eth0"``); an IPv4-mapped IPv6 address is checked as its
        IPv4 address.  A string that is not an IP is denied (``"unparsable"``):
        fail closed.
        """
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return "unparsable" if self._networks else None
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        for network in self._networks:
            if ip.version == network.version and ip in network:
                return str(network)
        return None

    def check(self, address: str) -> None:
        """Raise :class:`BlockedAddress` if ``address`` is denied."""
        network = self.denies(address)
        if network is not None:
            raise BlockedAddress(address, network)
