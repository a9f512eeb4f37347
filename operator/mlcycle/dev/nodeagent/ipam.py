"""The node's pod IP pool: one local address per pod, reused as late as possible."""

from __future__ import annotations


class PodIpAllocator:
    """Addresses local to this machine under a prefix (loopback, or the stack's pod network
    routed to `lo`), handed out round-robin so an address released by one pod is not given
    to the next pod at once (clients may still hold the old one)."""

    def __init__(self, prefix: str) -> None:
        octets = [int(o) for o in prefix.strip(".").split(".")]
        local = octets[:1] == [127] or octets[:2] in ([198, 18], [198, 19])
        if not 1 <= len(octets) <= 3 or not local or any(not 0 <= o <= 255 for o in octets):
            raise ValueError(
                f"pod IP prefix {prefix!r} must be 1-3 octets under 127. or 198.18.0.0/15"
            )
        self._octets = octets
        free_bits = 8 * (4 - len(octets))
        # Skip .0 and .1 of the range (network, and 127.x.0.1 looks like a host address).
        self._first = 2
        self._last = (1 << free_bits) - 2
        self._next = self._first
        self._held: dict[str, str] = {}

    def _address(self, offset: int) -> str:
        free_octets = 4 - len(self._octets)
        tail = [(offset >> (8 * i)) & 0xFF for i in reversed(range(free_octets))]
        return ".".join(str(o) for o in (*self._octets, *tail))

    def contains(self, address: str) -> bool:
        parts = address.split(".")
        return len(parts) == 4 and [int(p) for p in parts[: len(self._octets)]] == self._octets

    def reserve(self, owner: str, address: str) -> bool:
        """Keep an address a pod already has (agent restart); False if it cannot be kept."""
        if not self.contains(address) or address in self._held.values():
            return self._held.get(owner) == address
        self._held[owner] = address
        return True

    def allocate(self, owner: str) -> str:
        if owner in self._held:
            return self._held[owner]
        in_use = set(self._held.values())
        size = self._last - self._first + 1
        for step in range(size):
            offset = self._first + (self._next - self._first + step) % size
            address = self._address(offset)
            if address not in in_use:
                self._held[owner] = address
                self._next = offset + 1
                return address
        raise RuntimeError("no free pod IP left under the prefix")

    def release(self, owner: str) -> None:
        self._held.pop(owner, None)
