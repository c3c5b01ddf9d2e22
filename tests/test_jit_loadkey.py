"""The code cache keyed on a load's inputs (jit/loadkey.py): a hit runs no lowering and no LLVM.

JIT'd code runs unchecked, so the cases run in a child Python (``python
tests/test_jit_loadkey.py child``), one JSON line per case, each with a cache directory of its
own. Lowerings are counted by wrapping ``ModuleLowerer.add_program``.

Cases: a second load of a verified program with a native map lookup and a Python helper call is a
hit without lowering, in the same VM, in another VM (its own maps: the code uses them) and in
another process; inputs that change the code (a map's size or type, a helper's argument count,
an unverified load) miss and lower; an entry whose recipe names a value the load does not have,
or that lacks its load record, is counted as corrupt and compiled again; programs the key cannot
cover (callx) still work through the IR key.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest

from support import ROOT, asm, child_tests

pytestmark = pytest.mark.jit

_LOWERINGS = [0]


def _count_lowerings() -> None:
    from pybpf.jit import lower

    if getattr(lower.ModuleLowerer.add_program, "_counted", False):
        return
    original = lower.ModuleLowerer.add_program

    def add_program(self, *args, **kwargs):
        _LOWERINGS[0] += 1
        return original(self, *args, **kwargs)
    add_program._counted = True
    lower.ModuleLowerer.add_program = add_program


def _fresh_cache() -> str:
    d = tempfile.mkdtemp(prefix="pybpf-loadkey-test-")
    os.environ["PYBPF_JIT_CACHE"] = d
    _count_lowerings()
    return d


def _prog(array_entries: int = 4, hash_type: str = "hash"):
    """Counts runs in array[0] (a native lookup) and records the count in the hash map under
    the key at mem[0] (bpf_map_update_elem: a Python helper); returns the count. The maps are
    declarations: each VM that loads the program creates its own."""
    return asm(f"""
        .map arr type=array key=4 value=8 max_entries={array_entries}
        .map seen type={hash_type} key=8 value=8 max_entries=16
        r6 = r1
        r1 = 0
        *(u32 *)(r10 - 4) = r1
        r1 = map[arr] ll
        r2 = r10
        r2 += -4
        call bpf_map_lookup_elem
        if r0 == 0 goto out
        r7 = *(u64 *)(r0 + 0)
        r7 += 1
        *(u64 *)(r0 + 0) = r7
        *(u64 *)(r10 - 16) = r7
        r1 = map[seen] ll
        r2 = r6
        r3 = r10
        r3 += -16
        r4 = 0
        call bpf_map_update_elem
        r0 = r7
        exit
    out:
        r0 = 99
        exit""")


def _setup(array_entries: int = 4, hash_type: str = "hash"):
    from pybpf.vm import VM

    return VM(seed=1), _prog(array_entries, hash_type)


def _load(vm, prog, **kw):
    """(cache state, lowerings it ran, r0 of two runs, what the hash map holds for key 7) of
    one JIT load."""
    before = _LOWERINGS[0]
    key = (7).to_bytes(8, "little")
    lp = vm.load(prog, engine="jit", **{"tier": "O2", **kw})
    try:
        state = lp._jit.cache
        r0 = [lp.run(mem=key) for _ in range(2)]
        value = lp.maps["seen"].lookup(key)
    finally:
        lp.close()
    return state, _LOWERINGS[0] - before, r0, int.from_bytes(value, "little")


def case_hit_runs_no_lowering_in_this_vm_and_another():
    from pybpf.jit import cache

    _fresh_cache()
    vm, prog = _setup()
    first = _load(vm, prog)
    assert first == ("miss", 1, [1, 2], 2), first
    again = _load(vm, prog)
    assert again == ("hit", 0, [3, 4], 4), again     # the same maps: the count goes on
    vm2, prog2 = _setup()                 # other maps at other addresses
    other = _load(vm2, prog2)
    assert other == ("hit", 0, [1, 2], 2), other     # its own maps, not the first VM's
    auto = _load(vm2, prog2, tier="auto")         # auto finds the -O2 code: no quick tier
    assert auto == ("hit", 0, [3, 4], 4), auto
    return {"first": first, "again": again, "other vm": other, "counters": cache.counters()}


_OTHER = """
import json, sys
sys.path.insert(0, {tests!r})
import test_jit_loadkey as t
t._count_lowerings()
vm, prog = t._setup()
print(json.dumps(t._load(vm, prog)))
"""


def case_other_process_hits_without_lowering():
    _fresh_cache()
    vm, prog = _setup()
    assert _load(vm, prog)[:2] == ("miss", 1)
    code = _OTHER.format(tests=os.path.join(ROOT, "tests"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == ["hit", 0, [1, 2], 2], got
    return got


def case_inputs_that_change_the_code_miss():
    _fresh_cache()
    vm, prog = _setup()
    assert _load(vm, prog)[:2] == ("miss", 1)
    out = {}
    # same bytes, other map attributes: other code (array bound, hash layout)
    vm2, prog2 = _setup(array_entries=8)
    assert prog2.to_bytes() == prog.to_bytes()
    out["array size"] = _load(vm2, prog2)
    vm3, prog3 = _setup(hash_type="lru_hash")
    out["hash type"] = _load(vm3, prog3)
    vm4, prog4 = _setup()
    out["unverified"] = _load(vm4, prog4, verify=False)
    out["quick tier"] = _load(vm4, prog4, tier="quick")
    for what, got in out.items():
        assert got[:2] == ("miss", 1), (what, got)
    # and each of them is a hit the second time
    assert _load(vm4, prog4, verify=False)[:2] == ("hit", 0)
    return {k: v[:2] for k, v in out.items()}


def case_bad_recipe_or_missing_record_is_corrupt():
    import glob
    import hashlib

    from pybpf.jit import cache

    d = _fresh_cache()
    vm, prog = _setup()
    assert _load(vm, prog)[:2] == ("miss", 1)
    [path] = glob.glob(os.path.join(d, "*", "*.jit"))
    original = open(path, "rb").read()
    key = os.path.basename(path)[:-4]
    image, record = cache._decode(original[cache._HEAD.size:])
    results = {}
    for how in ("unknown path", "no record"):
        if how == "unknown path":
            bad = dict(record, recipe=[[n, ["v", 9999]] for n, _ in record["recipe"]])
            payload = cache._encode(image, bad)
        else:
            payload = cache._encode(image)
        with open(path, "wb") as f:     # checksum right: only the contents are wrong
            f.write(cache._HEAD.pack(cache._MAGIC, hashlib.sha256(key.encode() + payload)
                                     .digest(), len(payload)) + payload)
        before = cache.counters()["corrupt"]
        got = _load(vm, prog)
        results[how] = (got[:2], cache.counters()["corrupt"] - before)
        assert results[how] == (("miss", 1), 1), (how, results[how])
        assert open(path, "rb").read() == original
        assert _load(vm, prog)[:2] == ("hit", 0)
    return results


def case_callx_uses_the_ir_key():
    import pybpf

    _fresh_cache()
    vm = pybpf.VM()
    vm.register_helper(77, lambda a=0, *_: a * 3, "triple")
    prog = pybpf.assemble("r6 = 77\nr1 = 14\ncallx r6\nexit")
    before = _LOWERINGS[0]
    got = []
    for _ in range(2):
        with vm.load(prog, engine="jit", tier="O2", verify=False) as lp:
            got.append((lp._jit.cache, lp.run()))
    assert got == [("miss", 42), ("hit", 42)] and _LOWERINGS[0] - before == 2, got
    return got


child_tests(globals(), lambda d: json.loads(json.dumps(d, default=str)))
