"""Unloading JIT'd programs: close(), a with block and garbage collection all free the chunks,
and the freed range reads back as int3 (0xCC). In a subprocess, as JIT tests are."""
import textwrap

import pytest

from support import run_code

pytestmark = pytest.mark.jit

CHILD = textwrap.dedent("""
    import ctypes, gc
    import pybpf
    from pybpf.jit import placement

    def programs():
        return [p for pack in placement()["packs"] for p in pack["programs"]
                if p["name"].startswith("unload_")]

    prog = pybpf.assemble("r0 = 7\\nr0 += 35\\nexit")
    vm = pybpf.VM()
    # -O2 loads: no background compile places code into a range just freed. The keeper keeps
    # the pack alive: a pack whose last program goes is unmapped, and the freed range could
    # not be read back
    keeper = vm.load(prog, engine="jit", tier="O2", name="keeper")
    ways = {}

    lp = vm.load(prog, engine="jit", tier="O2", name="unload_close")
    addr, size = programs()[0]["address"], programs()[0]["size"]
    assert lp.run() == 42
    lp.close()
    ways["close"] = (programs(), ctypes.string_at(addr, size))

    with vm.load(prog, engine="jit", tier="O2", name="unload_with") as lp:
        assert lp.run() == 42
        addr, size = programs()[0]["address"], programs()[0]["size"]
    ways["with"] = (programs(), ctypes.string_at(addr, size))

    lp = vm.load(prog, engine="jit", tier="O2", name="unload_gc")
    assert lp.run() == 42
    addr, size = programs()[0]["address"], programs()[0]["size"]
    del lp
    gc.collect()
    ways["gc"] = (programs(), ctypes.string_at(addr, size))

    for way, (left, code) in ways.items():
        assert left == [], (way, left)
        assert code == b"\\xcc" * len(code), (way, code.hex())
    assert keeper.run() == 42
    print("ok", sorted(ways))
""")


def test_close_with_and_gc_free_the_code():
    p = run_code(CHILD, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip() == "ok ['close', 'gc', 'with']"
