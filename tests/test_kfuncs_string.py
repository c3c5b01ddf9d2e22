"""The string kfuncs (bpf_strcmp ... bpf_strnstr, kernel/bpf/helpers.c) in both engines, each
compared with the running kernel (BPF_PROG_TEST_RUN of a syscall program on the same argument
bytes) where bpf() is permitted: matches, misses, limits, case folding of Latin-1, unsigned
bytes, and bad pointers (NULL and user addresses are -ERANGE, an unmapped kernel address is
-EFAULT). A string running off the end of the run's memory is -EFAULT in pybpf: the kernel reads
on into whatever follows its copy of ctx_in, which pybpf never does (checked in both engines, not
comparable with the kernel)."""
from __future__ import annotations

import struct
import sys

import pytest

from kernel_probe import require_kernel
from kfunc_run import kernel_run, pybpf_run
from support import assert_case_passed, child, run_child

# ctx: r0 of the kfunc (u64 @0), scalar arguments A (u32 @8) and B (u32 @12), the first string
# (24 bytes @16) and the second (24 bytes @40)
S1 = {"ctx": "r1 = r6\nr1 += 16", "null": "r1 = 0",
      "kernel": "r1 = 0xffff800000000000 ll", "user": "r1 = 0x10000"}
ARGS = {
    "strcmp": "{s1}\nr2 = r6\nr2 += 40", "strcasecmp": "{s1}\nr2 = r6\nr2 += 40",
    "strspn": "{s1}\nr2 = r6\nr2 += 40", "strcspn": "{s1}\nr2 = r6\nr2 += 40",
    "strstr": "{s1}\nr2 = r6\nr2 += 40",
    "strnstr": "{s1}\nr2 = r6\nr2 += 40\nr3 = *(u32 *)(r6 + 8)",
    "strchr": "{s1}\nr2 = *(u32 *)(r6 + 8)", "strchrnul": "{s1}\nr2 = *(u32 *)(r6 + 8)",
    "strrchr": "{s1}\nr2 = *(u32 *)(r6 + 8)",
    "strnchr": "{s1}\nr2 = *(u32 *)(r6 + 8)\nr3 = *(u32 *)(r6 + 12)",
    "strlen": "{s1}", "strnlen": "{s1}\nr2 = *(u32 *)(r6 + 8)",
}


def program(fn: str, s1: str = "ctx") -> str:
    return (f"r6 = r1\n{ARGS[fn].format(s1=S1[s1])}\ncall bpf_{fn}\n"
            f"*(u64 *)(r6 + 0) = r0\nr0 = 0\nexit\n")


def ctx(a: bytes, b: bytes = b"", x: int = 0, y: int = 0) -> bytes:
    return struct.pack("<QII", 0, x, y) + a.ljust(24, b"\0")[:24] + b.ljust(24, b"\0")[:24]


# name: (kfunc, first string, second string, A, B, where the first string is)
CASES_TABLE = {
    "strcmp_equal": ("strcmp", b"hello", b"hello", 0, 0, "ctx"),
    "strcmp_less": ("strcmp", b"abc", b"abd", 0, 0, "ctx"),
    "strcmp_prefix": ("strcmp", b"abcd", b"abc", 0, 0, "ctx"),
    "strcmp_unsigned": ("strcmp", b"\x80", b"a", 0, 0, "ctx"),
    "strcmp_null": ("strcmp", b"", b"a", 0, 0, "null"),
    "strcmp_kernel": ("strcmp", b"", b"a", 0, 0, "kernel"),
    "strcmp_user": ("strcmp", b"", b"a", 0, 0, "user"),
    "strcasecmp_ascii": ("strcasecmp", b"HeLLo", b"hello", 0, 0, "ctx"),
    "strcasecmp_latin1": ("strcasecmp", b"\xc0\xde", b"\xe0\xfe", 0, 0, "ctx"),
    "strcasecmp_times": ("strcasecmp", b"\xd7", b"\xf7", 0, 0, "ctx"),
    "strcasecmp_less": ("strcasecmp", b"ABC", b"abd", 0, 0, "ctx"),
    "strchr_found": ("strchr", b"hello", b"", ord("l"), 0, "ctx"),
    "strchr_nul": ("strchr", b"hello", b"", 0, 0, "ctx"),
    "strchr_missing": ("strchr", b"hello", b"", ord("z"), 0, "ctx"),
    "strchr_truncated_char": ("strchr", b"hello", b"", 0x100 + ord("e"), 0, "ctx"),
    "strchr_null": ("strchr", b"", b"", 1, 0, "null"),
    "strchrnul_missing": ("strchrnul", b"hello", b"", ord("z"), 0, "ctx"),
    "strchrnul_found": ("strchrnul", b"hello", b"", ord("o"), 0, "ctx"),
    "strnchr_within": ("strnchr", b"hello", b"", 5, ord("o"), "ctx"),
    "strnchr_beyond": ("strnchr", b"hello", b"", 4, ord("o"), "ctx"),
    "strnchr_zero": ("strnchr", b"hello", b"", 0, ord("h"), "ctx"),
    "strrchr_last": ("strrchr", b"hello", b"", ord("l"), 0, "ctx"),
    "strrchr_missing": ("strrchr", b"hello", b"", ord("q"), 0, "ctx"),
    "strrchr_int_c": ("strrchr", b"hello", b"", 0x100 + ord("l"), 0, "ctx"),
    "strrchr_nul": ("strrchr", b"hello", b"", 0, 0, "ctx"),
    "strlen": ("strlen", b"hello world", b"", 0, 0, "ctx"),
    "strlen_empty": ("strlen", b"", b"", 0, 0, "ctx"),
    "strlen_null": ("strlen", b"", b"", 0, 0, "null"),
    "strlen_kernel": ("strlen", b"", b"", 0, 0, "kernel"),
    "strnlen_short": ("strnlen", b"hello world", b"", 4, 0, "ctx"),
    "strnlen_long": ("strnlen", b"hello", b"", 20, 0, "ctx"),
    "strspn": ("strspn", b"aabbcxa", b"ab", 0, 0, "ctx"),
    "strspn_none": ("strspn", b"xyz", b"ab", 0, 0, "ctx"),
    "strspn_all": ("strspn", b"abab", b"ab", 0, 0, "ctx"),
    "strcspn": ("strcspn", b"hello, world", b" ,", 0, 0, "ctx"),
    "strcspn_none": ("strcspn", b"hello", b"xyz", 0, 0, "ctx"),
    "strstr_found": ("strstr", b"openat2", b"at", 0, 0, "ctx"),
    "strstr_missing": ("strstr", b"openat2", b"ta", 0, 0, "ctx"),
    "strstr_empty": ("strstr", b"openat2", b"", 0, 0, "ctx"),
    "strstr_null": ("strstr", b"", b"x", 0, 0, "null"),
    "strnstr_suffix": ("strnstr", b"openat", b"open", 4, 0, "ctx"),
    "strnstr_short": ("strnstr", b"openat", b"open", 3, 0, "ctx"),
    "strnstr_later": ("strnstr", b"xxopen", b"open", 6, 0, "ctx"),
    "strnstr_cut": ("strnstr", b"xxopen", b"open", 5, 0, "ctx"),
}


def _run(name: str, engine: str | None):
    fn, a, b, x, y, where = CASES_TABLE[name]
    text, c = program(fn, where), ctx(a, b, x, y)
    r0, after = kernel_run(text, c) if engine is None else pybpf_run(text, c, engine)
    return r0, struct.unpack_from("<Q", after, 0)[0]


def _off_the_end(engine: str):
    """bpf_strlen of a 24-byte context without a NUL: the string runs off the run's memory."""
    text = "r6 = r1\ncall bpf_strlen\nexit\n".replace("call", "r1 = r6\ncall")
    return pybpf_run(text, b"x" * 24, engine)[0]


CASES = {name: (lambda n=name: _run(n, "jit")) for name in CASES_TABLE}
CASES["off_the_end"] = lambda: _off_the_end("jit")


@pytest.fixture(scope="module")
def jit_results():
    return run_child(__file__, CASES)


@pytest.mark.parametrize("name", CASES_TABLE)
def test_interpreter_matches_the_kernel(name):
    mine = _run(name, "interp")
    require_kernel("bpf", f"kfunc:bpf_{CASES_TABLE[name][0]}", "prog:syscall")
    assert mine == _run(name, None)


@pytest.mark.jit
@pytest.mark.parametrize("name", CASES_TABLE)
def test_the_jit_matches_the_interpreter(jit_results, name):
    assert_case_passed(jit_results, name)
    assert tuple(jit_results[0][name]["detail"]) == _run(name, "interp")


def test_error_codes_spelled_out():
    """What the comparisons pin down, on the interpreter: -ERANGE for NULL, -EFAULT for an
    unmapped kernel address, -1 and 1 as zero-extended ints."""
    assert _run("strlen_null", "interp")[1] == (-34) & 0xFFFFFFFF
    assert _run("strlen_kernel", "interp")[1] == (-14) & 0xFFFFFFFF
    assert _run("strcmp_less", "interp")[1] == 0xFFFFFFFF
    assert _run("strcmp_unsigned", "interp")[1] == 1


def test_a_string_off_the_end_of_memory_is_efault_in_the_interpreter():
    assert _off_the_end("interp") == (-14) & 0xFFFFFFFF


@pytest.mark.jit
def test_a_string_off_the_end_of_memory_is_efault_in_the_jit(jit_results):
    assert_case_passed(jit_results, "off_the_end")
    assert jit_results[0]["off_the_end"]["detail"] == (-14) & 0xFFFFFFFF


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        sys.exit(child(CASES, sys.argv[2:] or list(CASES)))
