"""The read-only string kfuncs of kernel/bpf/helpers.c (Linux 6.18): ``bpf_strcmp``,
``bpf_strcasecmp``, ``bpf_strchr``, ``bpf_strchrnul``, ``bpf_strnchr``, ``bpf_strrchr``,
``bpf_strlen``, ``bpf_strnlen``, ``bpf_strspn``, ``bpf_strcspn``, ``bpf_strstr``, ``bpf_strnstr``.

The verifier does not check their string arguments (``__ign``): the kernel's functions check at
run time, byte by byte, and so do these, against the run's memory regions (the active
RegionTable, :data:`pybpf.runtime.helpers.ACTIVE_REGIONS`, which both engines set):

* a string whose first byte is in no region is outside what the program may read: the kernel
  answers -ERANGE for such a pointer when it is outside its own address space (a user address,
  NULL, a small scalar), -EFAULT for an unmapped kernel address, so here -EFAULT for canonical
  kernel-half addresses (>= 0xffff800000000000) and -ERANGE for everything else;
* a string that runs off the end of its region before its NUL is -EFAULT (the kernel's
  ``__get_kernel_nofault`` failing);
* more than XATTR_SIZE_MAX bytes without an end is -E2BIG.

Nothing outside the run's regions is ever read. Bytes are unsigned (the kernel builds with
``-funsigned-char``); ``bpf_strcasecmp`` folds case with the kernel's ctype table (ASCII and the
Latin-1 capitals 0xC0-0xDE except 0xD7). Results are ``int``: returned as the x86-64 kernel
leaves them in r0, the 32-bit value zero-extended (checked against BPF_PROG_TEST_RUN in
tests/test_kfuncs_string.py).
"""
from __future__ import annotations

import errno

from .helpers import ACTIVE_REGIONS
from .memory import PROC

XATTR_SIZE_MAX = 65536
KERNEL_HALF = 0xFFFF800000000000      # x86-64: canonical kernel addresses start here
M32 = 0xFFFFFFFF


class _Fault(Exception):
    """A byte the program may not read (the kernel's err_out)."""


def _ret(v: int) -> int:
    return v & M32


class _Str:
    """Bytes of one string argument, read through the run's regions one at a time."""

    __slots__ = ("regions", "addr", "lo", "hi")

    def __init__(self, regions, addr: int) -> None:
        self.regions, self.addr, self.lo, self.hi = regions, addr, 0, 0

    def __getitem__(self, i: int) -> int:
        a = self.addr + i
        if not self.lo <= a < self.hi:
            r = self.regions.find(a, 1) if self.regions is not None else None
            if r is None:
                raise _Fault()
            self.lo, self.hi = r.start, r.end
        return PROC[a]


def _open(*addrs: int):
    """The strings at ``addrs``, or the error for the first one the program may not read
    (copy_from_kernel_nofault_allowed's -ERANGE, or -EFAULT)."""
    regions = ACTIVE_REGIONS.get()
    out = []
    for a in addrs:
        if regions is None or regions.find(a, 1) is None:
            return None, _ret(-errno.EFAULT if a >= KERNEL_HALF else -errno.ERANGE)
        out.append(_Str(regions, a))
    return out, 0


def _lower(c: int) -> int:
    """The kernel's tolower (lib/ctype.c: ASCII and Latin-1 capitals)."""
    if 0x41 <= c <= 0x5A or (0xC0 <= c <= 0xDE and c != 0xD7):
        return c + 32
    return c


def _cmp(s1: int, s2: int, ignore_case: bool) -> int:
    strs, err = _open(s1, s2)
    if strs is None:
        return err
    a, b = strs
    try:
        for i in range(XATTR_SIZE_MAX):
            c1, c2 = a[i], b[i]
            if ignore_case:
                c1, c2 = _lower(c1), _lower(c2)
            if c1 != c2:
                return _ret(-1 if c1 < c2 else 1)
            if c1 == 0:
                return 0
        return _ret(-errno.E2BIG)
    except _Fault:
        return _ret(-errno.EFAULT)


def bpf_strcmp(s1: int, s2: int) -> int:
    return _cmp(s1, s2, False)


def bpf_strcasecmp(s1: int, s2: int) -> int:
    return _cmp(s1, s2, True)


def bpf_strnchr(s: int, count: int, c: int) -> int:
    strs, err = _open(s)
    if strs is None:
        return err
    (a,), c = strs, c & 0xFF                    # char c
    i = 0
    try:
        while i < count and i < XATTR_SIZE_MAX:
            sc = a[i]
            if sc == c:
                return i
            if sc == 0:
                return _ret(-errno.ENOENT)
            i += 1
        return _ret(-errno.E2BIG if i == XATTR_SIZE_MAX else -errno.ENOENT)
    except _Fault:
        return _ret(-errno.EFAULT)


def bpf_strchr(s: int, c: int) -> int:
    return bpf_strnchr(s, XATTR_SIZE_MAX, c)


def bpf_strchrnul(s: int, c: int) -> int:
    strs, err = _open(s)
    if strs is None:
        return err
    (a,), c = strs, c & 0xFF
    try:
        for i in range(XATTR_SIZE_MAX):
            sc = a[i]
            if sc == 0 or sc == c:
                return i
        return _ret(-errno.E2BIG)
    except _Fault:
        return _ret(-errno.EFAULT)


def bpf_strrchr(s: int, c: int) -> int:
    strs, err = _open(s)
    if strs is None:
        return err
    (a,) = strs
    c &= M32
    c = c - (1 << 32) if c >> 31 else c         # int c, compared with an unsigned char
    last = -errno.ENOENT
    try:
        for i in range(XATTR_SIZE_MAX):
            sc = a[i]
            if sc == c:
                last = i
            if sc == 0:
                return _ret(last)
        return _ret(-errno.E2BIG)
    except _Fault:
        return _ret(-errno.EFAULT)


def bpf_strnlen(s: int, count: int) -> int:
    strs, err = _open(s)
    if strs is None:
        return err
    (a,) = strs
    i = 0
    try:
        while i < count and i < XATTR_SIZE_MAX:
            if a[i] == 0:
                return i
            i += 1
        return _ret(-errno.E2BIG if i == XATTR_SIZE_MAX else i)
    except _Fault:
        return _ret(-errno.EFAULT)


def bpf_strlen(s: int) -> int:
    return bpf_strnlen(s, XATTR_SIZE_MAX)


def _span(s: int, chars: int, accept: bool) -> int:
    strs, err = _open(s, chars)
    if strs is None:
        return err
    a, set_ = strs
    try:
        for i in range(XATTR_SIZE_MAX):
            cs = a[i]
            if cs == 0:
                return i
            for j in range(XATTR_SIZE_MAX):
                cc = set_[j]
                if cs == cc or cc == 0:
                    break
            else:
                return _ret(-errno.E2BIG)
            if (cc == 0) == accept:      # strspn: not in accept; strcspn: in reject
                return i
        return _ret(-errno.E2BIG)
    except _Fault:
        return _ret(-errno.EFAULT)


def bpf_strspn(s: int, accept: int) -> int:
    return _span(s, accept, True)


def bpf_strcspn(s: int, reject: int) -> int:
    return _span(s, reject, False)


def bpf_strnstr(s1: int, s2: int, length: int) -> int:
    strs, err = _open(s1, s2)
    if strs is None:
        return err
    hay, needle = strs
    try:
        for i in range(XATTR_SIZE_MAX):
            j = 0
            while i + j <= length and j < XATTR_SIZE_MAX:
                c2 = needle[j]
                if c2 == 0:
                    return i
                # one byte more of s2 than of s1 is read, so a suffix of the first ``length``
                # bytes matches (6.18's fix of the original i + j < len)
                if i + j == length:
                    break
                c1 = hay[i + j]
                if c1 == 0:
                    return _ret(-errno.ENOENT)
                if c1 != c2:
                    break
                j += 1
            if j == XATTR_SIZE_MAX:
                return _ret(-errno.E2BIG)
            if i + j == length:
                return _ret(-errno.ENOENT)
        return _ret(-errno.E2BIG)
    except _Fault:
        return _ret(-errno.EFAULT)


def bpf_strstr(s1: int, s2: int) -> int:
    return bpf_strnstr(s1, s2, XATTR_SIZE_MAX)


KFUNC_FNS = {f.__name__: f for f in (
    bpf_strcmp, bpf_strcasecmp, bpf_strchr, bpf_strchrnul, bpf_strnchr, bpf_strrchr,
    bpf_strlen, bpf_strnlen, bpf_strspn, bpf_strcspn, bpf_strstr, bpf_strnstr)}


def no_mem_args(args: tuple) -> list:
    """No argument the engines check up front (the strings are checked while read), but
    declaring the list makes both engines set the run's regions for the call."""
    return []
