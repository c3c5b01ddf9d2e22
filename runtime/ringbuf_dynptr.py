"""Ring buffer dynptrs (kernel/bpf/ringbuf.c): the helpers ``bpf_ringbuf_reserve_dynptr``
(198), ``bpf_ringbuf_submit_dynptr`` (199) and ``bpf_ringbuf_discard_dynptr`` (200).

A reservation becomes a dynptr of type RINGBUF over the sample (reads, writes, ``bpf_dynptr_data``
and the generic dynptr kfuncs of :mod:`.kfuncs_dynptr` work on it); a failed one leaves a NULL
dynptr and an error, and the verifier still wants it submitted or discarded on every path.
Submitting or discarding a NULL dynptr does nothing; otherwise the sample is committed as
``bpf_ringbuf_submit``/``discard`` commit theirs (the ring comes from the ring's books of
outstanding reservations, never from memory the program could write) and the dynptr is NULL
afterwards. The dynptr's 16 bytes are checked as a memory argument by both engines before the
call; the sample pointer inside them is checked by the ring (MapError EINVAL unless it is an
outstanding reservation), so a dynptr forged by unverified code cannot commit anything else.
"""
from __future__ import annotations

import errno

from pybpf.errors import MapError

from .kfuncs_dynptr import DYNPTR_MAX_SIZE, TYPE_RINGBUF, _init, _load, _set_null
from .maps.ringbuf import RingBuf

M32, M64 = 0xFFFFFFFF, (1 << 64) - 1


def _long(v: int) -> int:
    return v & M64


def make(resolve_map):
    """name -> (function, index of its dynptr argument, access) for the three helpers, bound
    to a VM's map resolver (``map.address`` or fd -> Map)."""

    def ringbuf_reserve_dynptr(map_value: int, size: int, flags: int, ptr: int) -> int:
        rb = resolve_map(map_value)
        if not isinstance(rb, RingBuf):
            raise MapError(f"bpf_ringbuf_reserve_dynptr: 0x{map_value:x} is not a ringbuf map",
                           errno.EINVAL)
        size &= M32
        if flags:
            _set_null(ptr)
            return _long(-errno.EINVAL)
        if size > DYNPTR_MAX_SIZE:           # bpf_dynptr_check_size
            _set_null(ptr)
            return _long(-errno.E2BIG)
        sample = rb.reserve(size)
        if not sample:
            _set_null(ptr)
            return _long(-errno.EINVAL)
        _init(ptr, sample, TYPE_RINGBUF, 0, size)
        return 0

    def _commit(ptr: int, flags: int, discard: bool, name: str) -> int:
        sample = _load(ptr)[0]
        if not sample:
            return 0
        rb = resolve_map(RingBuf.ring_of_sample(sample))
        if not isinstance(rb, RingBuf):
            raise MapError(f"{name}: 0x{sample:x} is not a ring buffer sample", errno.EINVAL)
        rb.commit(sample, flags, discard=discard)
        _set_null(ptr)
        return 0

    def ringbuf_submit_dynptr(ptr: int, flags: int) -> int:
        return _commit(ptr, flags, False, "bpf_ringbuf_submit_dynptr")

    def ringbuf_discard_dynptr(ptr: int, flags: int) -> int:
        return _commit(ptr, flags, True, "bpf_ringbuf_discard_dynptr")

    return {"ringbuf_reserve_dynptr": (ringbuf_reserve_dynptr, 3, "write"),
            "ringbuf_submit_dynptr": (ringbuf_submit_dynptr, 0, "write"),
            "ringbuf_discard_dynptr": (ringbuf_discard_dynptr, 0, "write")}
