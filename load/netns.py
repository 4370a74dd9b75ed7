"""Hosts on one machine for the cluster test: network namespaces on a bridge (iproute2, as root).

Every name carries a random tag and every address is in a /24 that no route of this machine
uses, so nothing else is touched; `Network.remove` takes away all it made, and is safe to call
after a partial setup.
"""

from __future__ import annotations

import ipaddress
import secrets
import subprocess

import attrs


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def free_subnet() -> ipaddress.IPv4Network:
    """A 10.213.x.0/24 that no route or address of this machine overlaps."""
    routes = ip("-4", "route", "show", "table", "all").stdout
    addresses = ip("-4", "-o", "addr", "show").stdout
    used = []
    for word in (routes + " " + addresses).split():
        try:
            used.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            continue
    for third in range(10, 250):
        subnet = ipaddress.IPv4Network(f"10.213.{third}.0/24")
        if not any(subnet.overlaps(u) for u in used if u.prefixlen > 0):
            return subnet
    raise RuntimeError("no free 10.213.x.0/24 subnet")


@attrs.define
class Host:
    namespace: str
    veth: str  # the host side of its link, on the bridge
    address: str

    def exec_prefix(self) -> list[str]:
        """Run a command on this host. Not `ip netns exec`: it mounts a /sys of its own, which
        hides the cgroup hierarchies the replica needs; nsenter enters only the network."""
        return ["nsenter", f"--net=/run/netns/{self.namespace}", "--"]

    def cut(self) -> None:
        ip("link", "set", self.veth, "down")

    def mend(self) -> None:
        ip("link", "set", self.veth, "up")


@attrs.define
class Network:
    """A bridge on this machine (the gateway, where Redis and HAProxy listen) and hosts."""

    tag: str = attrs.field(factory=lambda: secrets.token_hex(3))
    subnet: ipaddress.IPv4Network = attrs.field(factory=free_subnet)
    hosts: list[Host] = attrs.field(factory=list)
    bridge_made: bool = False

    @property
    def bridge(self) -> str:
        return f"etbr{self.tag}"

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    def create(self, count: int) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        self.bridge_made = True
        ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for index in range(1, count + 1):
            self.add_host(index)

    def add_host(self, index: int) -> Host:
        host = Host(
            namespace=f"emcc-trio-{self.tag}-{index}",
            veth=f"et{self.tag}h{index}",
            address=str(self.subnet.network_address + 10 + index),
        )
        inside = f"et{self.tag}n{index}"
        ip("netns", "add", host.namespace)
        self.hosts.append(host)
        ip("link", "add", host.veth, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", host.namespace)
        ip("link", "set", host.veth, "master", self.bridge)
        ip("link", "set", host.veth, "up")
        inner = ["-n", host.namespace]
        ip(*inner, "addr", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", inside)
        ip(*inner, "link", "set", inside, "up")
        ip(*inner, "link", "set", "lo", "up")
        return host

    def remove(self) -> list[str]:
        """Delete every namespace and link made; return what could not be removed."""
        problems = []
        for host in self.hosts:
            # Deleting the namespace deletes its end of the veth pair, and so the pair.
            done = ip("netns", "delete", host.namespace, check=False)
            if done.returncode != 0:
                problems.append(f"netns {host.namespace}: {done.stderr.strip()}")
            ip("link", "delete", host.veth, check=False)
        if self.bridge_made:
            done = ip("link", "delete", self.bridge, check=False)
            if done.returncode != 0:
                problems.append(f"bridge {self.bridge}: {done.stderr.strip()}")
        return problems + self.leftovers()

    def leftovers(self) -> list[str]:
        """Namespaces and links of this network still present."""
        namespaces = [
            line.split()[0]
            for line in ip("netns", "list").stdout.splitlines()
            if line.startswith(f"emcc-trio-{self.tag}-")
        ]
        links = [
            line
            for line in ip("-o", "link", "show").stdout.splitlines()
            if f"et{self.tag}" in line or self.bridge in line
        ]
        return namespaces + links
