"""Who a request comes from: its API token's name when tokens are on, else its address.

Behind a balancer the address is the balancer's; `X-Forwarded-For` names the real one, but
anyone can send that header, so it is believed only when the direct peer is a trusted proxy
(`trustedProxies`), and then read from the right: the first address that is not itself a
trusted proxy is the client (entries further left were written by the client, and can lie).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Literal

import attrs

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ClientKind = Literal["token", "address"]


@attrs.frozen
class Client:
    key: str  # what fairness and the per-client bound count by
    kind: ClientKind


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or bare addresses) as networks; ValueError names the bad one."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{cidr!r} is not an address or CIDR") from exc
    return tuple(networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: Sequence[Network]
) -> bool:
    return any(address in network for network in trusted)


def client_address(peer: str, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address: `peer`, or from `X-Forwarded-For` (every header's values, in
    order) when `peer` is a trusted proxy."""
    peer_address = _address(peer)
    if peer_address is None or not _trusted(peer_address, trusted):
        return peer
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # a proxy we trust wrote nonsense: fall back to the last address we know
        peer_address = address
        if not _trusted(address, trusted):
            break
    return str(peer_address)


def identify(
    peer: str, forwarded_for: Sequence[str], trusted: Sequence[Network], token_name: str | None
) -> Client:
    if token_name is not None:
        return Client(key=f"token:{token_name}", kind="token")
    return Client(key=client_address(peer, forwarded_for, trusted), kind="address")
