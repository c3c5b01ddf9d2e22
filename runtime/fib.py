"""The network a VM's programs see: devices, routes and neighbours for ``bpf_fib_lookup`` (and the
devices devmaps may point at), given by the user instead of the host's kernel tables.

    >>> net = FibTable()                      # the loopback device only, as a fresh netns
    >>> net.add_device(2, mac="02:00:00:00:00:02", mtu=1500)
    >>> net.add_route("10.0.0.0/8", ifindex=2, gateway="192.168.1.1")
    >>> net.add_neighbour(2, "192.168.1.1", "02:00:00:00:00:99")

``vm.fib`` is the VM's table. ``bpf_fib_lookup(ctx, params, plen, flags)`` (XDP and tc) follows
``bpf_ipv4_fib_lookup`` / ``bpf_ipv6_fib_lookup`` (net/core/filter.c) on it, with the kernel's
``struct bpf_fib_lookup`` (64 bytes, :class:`BpfFibLookup`) and results:

* -EINVAL for ``plen`` < 64 or unknown flags, -EAFNOSUPPORT for a family other than AF_INET(6),
  -ENODEV for an unknown ``ifindex``;
* ``BPF_FIB_LKUP_RET_FWD_DISABLED`` when the input device does not forward (the loopback, as
  a fresh kernel's, does not: ``net.ipv4.conf.lo.forwarding`` = 0);
* the longest matching prefix (then the lowest metric); none: ``NOT_FWDED``; a route of type
  "blackhole", "unreachable", "prohibit" gives ``BLACKHOLE``/``UNREACHABLE``/``PROHIBIT``;
* ``FRAG_NEEDED`` (``mtu_result`` set) when ``tot_len`` is above the route's device MTU;
* success fills ifindex (the route's device), rt_metric, ipv4/6_dst (the gateway, when the route
  has one), with BPF_FIB_LOOKUP_SRC ipv4/6_src (the route's ``prefsrc``; none:
  ``NO_SRC_ADDR``), then unless BPF_FIB_LOOKUP_SKIP_NEIGH smac (the device's) and dmac (the
  neighbour of the next hop; none: ``NO_NEIGH``), h_vlan_* = 0 and mtu_result.

Not modelled: FIB rules and tables (BPF_FIB_LOOKUP_DIRECT and TBID look the one table up),
marks, multipath, lightweight tunnels, IPv4 routes with IPv6 gateways.
"""
from __future__ import annotations

import ctypes
import errno
import ipaddress
from dataclasses import dataclass, field

AF_INET, AF_INET6 = 2, 10
BPF_FIB_LOOKUP_DIRECT, BPF_FIB_LOOKUP_OUTPUT, BPF_FIB_LOOKUP_SKIP_NEIGH = 1, 2, 4
BPF_FIB_LOOKUP_TBID, BPF_FIB_LOOKUP_SRC, BPF_FIB_LOOKUP_MARK = 8, 16, 32
BPF_FIB_LOOKUP_MASK = 63
(BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LKUP_RET_BLACKHOLE, BPF_FIB_LKUP_RET_UNREACHABLE,
 BPF_FIB_LKUP_RET_PROHIBIT, BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_FWD_DISABLED,
 BPF_FIB_LKUP_RET_UNSUPP_LWT, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_FRAG_NEEDED,
 BPF_FIB_LKUP_RET_NO_SRC_ADDR) = range(10)
_ROUTE_TYPES = {"unicast": None, "blackhole": BPF_FIB_LKUP_RET_BLACKHOLE,
                "unreachable": BPF_FIB_LKUP_RET_UNREACHABLE,
                "prohibit": BPF_FIB_LKUP_RET_PROHIBIT}
M64 = (1 << 64) - 1


class BpfFibLookup(ctypes.Structure):
    """``struct bpf_fib_lookup`` (include/uapi/linux/bpf.h), 64 bytes. Addresses are in network
    byte order as raw bytes (``src``/``dst``: 16 bytes, IPv4 in the first 4)."""

    _pack_ = 1
    _fields_ = [("family", ctypes.c_uint8), ("l4_protocol", ctypes.c_uint8),
                ("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16),
                ("tot_len", ctypes.c_uint16),            # output: mtu_result
                ("ifindex", ctypes.c_uint32),
                ("tos", ctypes.c_uint32),                # flowinfo; output: rt_metric
                ("src", ctypes.c_uint8 * 16), ("dst", ctypes.c_uint8 * 16),
                ("h_vlan_proto", ctypes.c_uint16),       # with h_vlan_TCI: tbid
                ("h_vlan_TCI", ctypes.c_uint16),
                ("smac", ctypes.c_uint8 * 6),            # input: mark (first 4 bytes)
                ("dmac", ctypes.c_uint8 * 6)]


assert ctypes.sizeof(BpfFibLookup) == 64 and BpfFibLookup.dst.offset == 32 \
    and BpfFibLookup.smac.offset == 52


def _mac(value) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    else:
        raw = bytes(int(p, 16) for p in str(value).split(":")) if value else bytes(6)
    if len(raw) != 6:
        raise ValueError(f"a MAC address has 6 bytes, got {value!r}")
    return raw


@dataclass
class Device:
    ifindex: int
    name: str = ""
    mac: bytes = bytes(6)
    mtu: int = 1500
    forwarding: bool = True


@dataclass
class Route:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    ifindex: int
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    type: str = "unicast"
    metric: int = 0
    prefsrc: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    mtu: int | None = None


@dataclass
class FibTable:
    """Devices (by ifindex), routes and neighbours; starts with the loopback (ifindex 1, MTU
    65536, not forwarding)."""

    devices: dict[int, Device] = field(default_factory=lambda: {
        1: Device(1, "lo", bytes(6), 65536, forwarding=False)})
    routes: list[Route] = field(default_factory=list)
    neighbours: dict[tuple[int, bytes], bytes] = field(default_factory=dict)

    def add_device(self, ifindex: int, name: str = "", mac=None, mtu: int = 1500,
                   forwarding: bool = True) -> Device:
        if not 0 < ifindex < 1 << 31:
            raise ValueError(f"ifindex {ifindex} is not a positive int")
        dev = self.devices[ifindex] = Device(ifindex, name or f"eth{ifindex}", _mac(mac),
                                             mtu, forwarding)
        return dev

    def has_device(self, ifindex: int) -> bool:
        return ifindex in self.devices

    def add_route(self, prefix: str, ifindex: int, gateway: str | None = None,
                  type: str = "unicast", metric: int = 0, prefsrc: str | None = None,
                  mtu: int | None = None) -> Route:
        if type not in _ROUTE_TYPES:
            raise ValueError(f"route type {type!r} (expected {', '.join(_ROUTE_TYPES)})")
        if type == "unicast" and ifindex not in self.devices:
            raise ValueError(f"no device {ifindex}: add_device() it first")
        r = Route(ipaddress.ip_network(prefix, strict=False), ifindex,
                  ipaddress.ip_address(gateway) if gateway else None, type, metric,
                  ipaddress.ip_address(prefsrc) if prefsrc else None, mtu)
        self.routes.append(r)
        return r

    def add_neighbour(self, ifindex: int, ip: str, mac) -> None:
        self.neighbours[(ifindex, ipaddress.ip_address(ip).packed)] = _mac(mac)

    def route(self, dst) -> Route | None:
        """The longest prefix (then lowest metric) route for ``dst``."""
        best = None
        for r in self.routes:
            if r.network.version == dst.version and dst in r.network:
                if best is None or (r.network.prefixlen, -r.metric) > \
                        (best.network.prefixlen, -best.metric):
                    best = r
        return best

    # -- bpf_fib_lookup -----------------------------------------------------------------------
    def lookup(self, p: BpfFibLookup, flags: int, check_mtu: bool = True) -> int:
        """bpf_ipv4/ipv6_fib_lookup on ``p`` (changed in place): a BPF_FIB_LKUP_RET_* code, or
        a negative errno."""
        v6 = p.family == AF_INET6
        n = 16 if v6 else 4
        dev = self.devices.get(p.ifindex)
        if dev is None:
            return -errno.ENODEV
        if not dev.forwarding:
            return BPF_FIB_LKUP_RET_FWD_DISABLED
        dst = ipaddress.ip_address(bytes(p.dst)[:n])
        r = self.route(dst)
        if r is None:
            return BPF_FIB_LKUP_RET_NOT_FWDED
        code = _ROUTE_TYPES[r.type]
        if code is not None:
            return code
        out = self.devices[r.ifindex]
        mtu = r.mtu or out.mtu
        if check_mtu and p.tot_len > mtu:
            p.tot_len = mtu & 0xFFFF          # mtu_result
            return BPF_FIB_LKUP_RET_FRAG_NEEDED
        p.tos = r.metric & 0xFFFFFFFF         # rt_metric
        p.ifindex = out.ifindex
        if flags & BPF_FIB_LOOKUP_SRC:
            if r.prefsrc is None:
                return BPF_FIB_LKUP_RET_NO_SRC_ADDR
            ctypes.memmove(p.src, r.prefsrc.packed, n)
        if r.gateway is not None:
            ctypes.memmove(p.dst, r.gateway.packed, n)
        if not flags & BPF_FIB_LOOKUP_SKIP_NEIGH:
            neigh = self.neighbours.get((out.ifindex, bytes(p.dst)[:n]))
            if neigh is None:
                return BPF_FIB_LKUP_RET_NO_NEIGH
            ctypes.memmove(p.dmac, neigh, 6)
            ctypes.memmove(p.smac, out.mac, 6)
        p.h_vlan_proto = p.h_vlan_TCI = 0
        if check_mtu:
            p.tot_len = mtu & 0xFFFF
        return BPF_FIB_LKUP_RET_SUCCESS


def make_fib_lookup(get_table):
    """The ``bpf_fib_lookup`` helper over ``get_table()`` (the VM's FibTable): the XDP variant
    (MTU always checked against ``tot_len``) in xdp runs, the skb one elsewhere (checked only
    when ``tot_len`` is set; otherwise ``mtu_result`` is the output device's MTU)."""
    from .helpers import ACTIVE_RUN

    def fib_lookup(ctx: int, params: int, plen: int, flags: int) -> int:
        plen &= 0xFFFFFFFF
        if plen >= 1 << 31 or plen < ctypes.sizeof(BpfFibLookup):
            return -errno.EINVAL & M64
        flags &= 0xFFFFFFFF
        if flags & ~BPF_FIB_LOOKUP_MASK:
            return -errno.EINVAL & M64
        p = BpfFibLookup.from_address(params)     # checked by the prototype: [params, +plen)
        if p.family not in (AF_INET, AF_INET6):
            return -errno.EAFNOSUPPORT & M64
        rc = ACTIVE_RUN.get()
        xdp = rc is None or rc.prog_type == "xdp"
        check_mtu = xdp or p.tot_len != 0
        table = get_table()
        ret = table.lookup(p, flags, check_mtu)
        if ret == BPF_FIB_LKUP_RET_SUCCESS and not check_mtu:
            p.tot_len = table.devices[p.ifindex].mtu & 0xFFFF
        return ret & M64
    return fib_lookup
