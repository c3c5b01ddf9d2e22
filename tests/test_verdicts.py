"""The verifier's verdict cache (pybpf/verdicts.py, issue 13): a program verified before is
answered from disk, with the same facts; anything the key covers that changes is a miss; a
rejected program is rejected again; a bad entry is never trusted."""
from __future__ import annotations

import json
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pybpf import diskcache, verdicts
from pybpf.errors import VerifierError
from pybpf.vm import VM
from support import ROOT, asm

ROOT = Path(ROOT)

# value bytes 8..16 of the array's only element: needs value_size >= 16
PROG = """
.map g type=array key=4 value=16 max_entries=1
    *(u32 *)(r10 - 4) = 0
    r1 = map[g] ll
    r2 = r10
    r2 += -4
    call bpf_map_lookup_elem
    if r0 == 0 goto +1
    r0 = *(u64 *)(r0 + 8)
    exit
"""


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PYBPF_JIT_CACHE", str(tmp_path))
    monkeypatch.delenv("PYBPF_VERDICT_CACHE", raising=False)
    return tmp_path


class Delta:
    """What the verdict cache's counters did since this was made."""

    def __init__(self) -> None:
        self.before = verdicts.counters()

    def __call__(self) -> dict:
        now = verdicts.counters()
        return {k: now[k] - self.before[k] for k in now if now[k] != self.before[k]}


def same(a, b) -> bool:
    return (a.facts._seen, a.facts._access, a.stats, a.max_ctx_offset, a.stack_depth, a.full,
            a.log) == (b.facts._seen, b.facts._access, b.stats, b.max_ctx_offset,
                       b.stack_depth, b.full, b.log)


def test_a_second_verification_is_a_hit_with_the_same_verdict(cache_dir):
    prog = asm(PROG)
    d = Delta()
    first = VM().load(prog).verify_result
    assert d() == {"misses": 1, "stores": 1}
    assert len(list(cache_dir.rglob("*" + verdicts.SUFFIX))) == 1
    d = Delta()
    vm = VM()                         # another VM: its own maps of the same shape, other fds
    lp = vm.load(prog)
    assert d() == {"hits": 1} and same(first, lp.verify_result)
    assert lp.verify_result.facts is not first.facts
    assert lp.verify_result.facts.access_kind(7) == "map_value"
    lp.maps["g"][0] = (5).to_bytes(8, "little") + (37).to_bytes(8, "little")
    assert lp.run() == 37
    # a verification without a load sees the declarations (no fd, no map object): its own entry
    d = Delta()
    assert same(vm.verify_result(prog), first) and same(vm.verify_result(prog), first)
    assert d() == {"misses": 1, "stores": 1, "hits": 1}


def test_another_process_hits_the_entry(cache_dir):
    prog = asm(PROG)
    VM().load(prog)
    code = ("import json, sys; from pybpf import verdicts; from pybpf.vm import VM; "
            "from support import asm; "
            "VM().load(asm(sys.argv[1])); print(json.dumps(verdicts.counters()))")
    out = subprocess.run([sys.executable, "-c", code, PROG],
                         capture_output=True, text=True, timeout=120, cwd=ROOT / "tests",
                         env={**os.environ, "PYBPF_JIT_CACHE": str(cache_dir)})
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["hits"] == 1 and got["stores"] == 0 and got["misses"] == 0


def _rewrite(path, payload: bytes, key: str) -> None:
    path.write_bytes(diskcache.HEAD.pack(verdicts.MAGIC, hashlib.sha256(
        key.encode() + payload).digest(), len(payload)) + payload)


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign", "other-key", "bad-fact",
                                    "magic"])
def test_a_bad_entry_is_detected_and_verified_again(cache_dir, damage):
    prog = asm(PROG)
    want = VM().verify_result(prog)
    (path,) = cache_dir.rglob("*" + verdicts.SUFFIX)
    other = VM().verify_result(prog, prog_type="socket_filter")    # a second entry
    (other_path,) = set(cache_dir.rglob("*" + verdicts.SUFFIX)) - {path}
    key, blob = path.stem, path.read_bytes()
    payload = blob[diskcache.HEAD.size:]
    if damage == "flip":
        i = len(blob) - 10
        path.write_bytes(blob[:i] + bytes([blob[i] ^ 1]) + blob[i + 1:])
    elif damage == "truncate":
        path.write_bytes(blob[:len(blob) // 2])
    elif damage == "foreign":                   # another key's whole entry, checksum and all
        path.write_bytes(other_path.read_bytes())
    elif damage == "other-key":                 # another key's payload, checksummed for this key
        _rewrite(path, other_path.read_bytes()[diskcache.HEAD.size:], key)
    elif damage == "bad-fact":                  # a well-checksummed entry of the wrong shape
        v = json.loads(payload)
        v["seen"][0][2] = [["stack"], "x"]
        _rewrite(path, json.dumps(v).encode(), key)
    else:                                       # the code cache's magic
        path.write_bytes(b"PYBPFJIT" + blob[8:])
    d = Delta()
    got = VM().verify_result(prog)
    assert d() == {"corrupt": 1, "misses": 1, "stores": 1}
    assert same(got, want) and other_path.exists()
    d = Delta()
    VM().verify_result(prog)                    # stored again, whole
    assert d() == {"hits": 1}


def test_other_maps_prototypes_or_types_miss_and_a_rejection_stands(cache_dir):
    prog = asm(PROG)
    VM().load(prog)                             # accepted and stored for a 16-byte value
    small = asm(PROG.replace("value=16", "value=8"))
    assert small.to_bytes() == prog.to_bytes()
    for _ in range(2):                          # the same bytes, a smaller map: rejected, twice
        d = Delta()
        with pytest.raises(VerifierError) as e:
            VM().load(small)
        assert e.value.pc == 7
        assert d() == {"misses": 1}
    # a helper 1 whose prototype returns an integer: dereferencing r0 is refused
    vm = VM()
    vm.register_helper(1, lambda *a: 0, "lookup", prototype=("ARG_ANYTHING", "ARG_ANYTHING"))
    d = Delta()
    with pytest.raises(VerifierError, match="R0 invalid mem access 'scalar'"):
        vm.verify_result(prog)
    assert d() == {"misses": 1}
    d = Delta()
    VM().verify_result(prog, prog_type="socket_filter")   # another program type
    assert d() == {"misses": 1, "stores": 1}
    d = Delta()
    VM().load(prog)                             # the first entry is still there
    assert d() == {"hits": 1}


SNPRINTF = """
.map fmt type=array key=4 value=32 max_entries=1 flags=128
r1 = r10
r1 += -64
r2 = 32
r3 = map_value[fmt] + 0 ll
r4 = r10
r4 += -16
*(u64 *)(r10 - 16) = 1
*(u64 *)(r10 - 8) = 2
r5 = 16
call bpf_snprintf
exit
"""


def test_the_map_contents_the_verifier_reads_are_in_the_key(cache_dir):
    """bpf_snprintf's format is read from a read-only map's value at load: another format in
    the same map is another question (two arguments for "%d %d"; three is an error)."""
    prog = asm(SNPRINTF)

    def load(fmt: bytes):
        vm = VM()
        m = vm.create_map("array", 4, 32, 1, flags=128, name="fmt")
        m.sys_update(bytes(4), fmt.ljust(32, b"\0"))
        m.freeze()
        return vm.load(prog, prog_type="syscall", maps={"fmt": m})
    d = Delta()
    load(b"%d %d")
    load(b"%d %d")
    assert d() == {"misses": 1, "stores": 1, "hits": 1}
    d = Delta()
    with pytest.raises(VerifierError, match="Invalid format string"):
        load(b"%d %d %d")
    assert d() == {"misses": 1}


def test_a_rejected_program_is_never_stored(cache_dir):
    bad = asm("r1 = 1\nexit")
    for _ in range(2):
        d = Delta()
        with pytest.raises(VerifierError, match="R0 !read_ok"):
            VM().load(bad)
        assert d() == {"misses": 1}
    assert not list(cache_dir.rglob("*" + verdicts.SUFFIX))


def test_a_log_request_runs_the_verifier(cache_dir):
    prog = asm(PROG)
    VM().verify_result(prog)
    d = Delta()
    log = VM().verify(prog, log_level=2)
    assert "processed 8 insns" in log and "R1_w=map_ptr(map=g,ks=4,vs=16)" in log
    assert d() == {}


def test_off_switch(cache_dir, monkeypatch):
    monkeypatch.setenv("PYBPF_VERDICT_CACHE", "off")
    d = Delta()
    VM().verify_result(asm(PROG))
    VM().verify_result(asm(PROG))
    assert d() == {} and not list(cache_dir.rglob("*" + verdicts.SUFFIX))


def test_a_question_outside_the_key_stores_nothing(cache_dir, monkeypatch):
    real = verdicts._key

    def narrow(*args):
        k, asked = real(*args)
        return k, {q for q in asked if q[0] != "helper"}
    monkeypatch.setattr(verdicts, "_key", narrow)
    d = Delta()
    VM().verify_result(asm(PROG))
    assert d() == {"misses": 1, "uncacheable": 1}
    assert not list(cache_dir.rglob("*" + verdicts.SUFFIX))


def test_the_key_covers_what_the_verifier_reads():
    """Every program attribute and environment question in the verifier's source is one the
    key describes: a new one fails here rather than serving stale verdicts."""
    prog_attrs, env_attrs, value_attrs = set(), set(), set()
    for f in (ROOT / "verifier").glob("*.py"):
        text = f.read_text()
        prog_attrs |= set(re.findall(r"\bprog\.(\w+)", text))
        prog_attrs |= set(re.findall(r"getattr\((?:chk\.)?prog, \"(\w+)\"", text))
        env_attrs |= set(re.findall(r"\benv\.([a-z_]+)\b", text))
        value_attrs |= set(re.findall(r"getattr\(value, \"(\w+)\"", text))
    assert prog_attrs - {"instructions"} <= set(verdicts.PROG_ATTRS), prog_attrs
    asked = {name for name in vars(verdicts._Recording) if not name.startswith("_")}
    assert env_attrs <= asked, env_attrs - asked
    assert value_attrs and value_attrs <= set(verdicts.VALUE_ATTRS), value_attrs
