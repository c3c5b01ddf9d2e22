"""Codegen plumbing: the compile worker pool, object extraction, native calls and test_run.

Anything that executes JIT'd code runs in a child Python (``_child``) so that a bad jump cannot
take pytest down; compiles alone are safe here because LLVM only ever runs in worker processes.
This process must never import ``llvmlite.binding`` (it would map a W+X page into it).
"""
from __future__ import annotations

import struct
import sys
import textwrap
import threading

import pytest

from pybpf.errors import JITError
from pybpf.jit import codegen

from support import run_code

pytestmark = pytest.mark.jit

ADD_IR = """\
define i64 @add(i64 %a, i64 %b) nounwind {
  %s = add i64 %a, %b
  ret i64 %s
}
"""


def big_ir(blocks: int = 14, seed: int = 1) -> str:
    """A function shaped like lowered BPF (register allocas, a 512-byte stack, masked shifts,
    guarded division, forward branches); the default 14 blocks make 200 lines of IR."""
    import random

    rnd = random.Random(seed)
    out = ['define i64 @prog(i64 %ctx, i64 %len) #0 {', "entry:"]
    out += [f"  %r{i} = alloca i64, align 8" for i in range(10)]
    out += ["  %stack = alloca [512 x i8], align 8",
            "  store i64 %ctx, ptr %r1", "  store i64 %len, ptr %r2"]
    out.append("  %mem = inttoptr i64 %ctx to ptr")
    for i in (0, 3, 4, 5, 6, 7, 8, 9):  # registers start as loads from the context
        out += [f"  %i{i} = getelementptr inbounds i8, ptr %mem, i64 {8 * i}",
                f"  %l{i} = load i64, ptr %i{i}, align 1", f"  store i64 %l{i}, ptr %r{i}"]
    out.append("  br label %b0")
    ops = ["add", "sub", "xor", "and", "or", "mul", "shl", "lshr", "udiv"]
    for i in range(blocks):
        x, y, z = rnd.randrange(10), rnd.randrange(10), rnd.randrange(10)
        op, slot = rnd.choice(ops), 8 * rnd.randrange(1, 64)
        out += [f"b{i}:", f"  %a{i} = load i64, ptr %r{x}", f"  %v{i} = load i64, ptr %r{y}"]
        if op in ("shl", "lshr"):
            out += [f"  %m{i} = and i64 %v{i}, 63", f"  %c{i} = {op} i64 %a{i}, %m{i}"]
        elif op == "udiv":
            out += [f"  %z{i} = icmp eq i64 %v{i}, 0",
                    f"  %d{i} = select i1 %z{i}, i64 1, i64 %v{i}",
                    f"  %q{i} = udiv i64 %a{i}, %d{i}",
                    f"  %c{i} = select i1 %z{i}, i64 0, i64 %q{i}"]
        else:
            out.append(f"  %c{i} = {op} i64 %a{i}, %v{i}")
        out += [f"  store i64 %c{i}, ptr %r{z}",
                f"  %p{i} = getelementptr inbounds i8, ptr %stack, i64 {512 - slot}",
                f"  store i64 %c{i}, ptr %p{i}, align 8"]
        nxt = f"b{i + 1}" if i + 1 < blocks else "exit"
        far = f"b{rnd.randrange(i + 1, blocks)}" if i + 2 < blocks else "exit"
        out += [f"  %t{i} = icmp ult i64 %c{i}, %a{i}", f"  br i1 %t{i}, label %{nxt}, label %{far}"]
    out += ["exit:"] + [f"  %e{i} = load i64, ptr %r{i}" for i in range(10)]
    out += [f"  %f{i} = xor i64 %{'e' if i == 1 else 'f'}{i - 1}, %e{i}" for i in range(1, 10)]
    out += ["  ret i64 %f9", "}",
            'attributes #0 = { nounwind "no-builtins" }']
    return "\n".join(out) + "\n"


def _child(code: str, env: dict | None = None, timeout: float = 60) -> str:
    """Run ``code`` in a fresh Python with our import path; return its stdout."""
    full_env = {key: None for key in ("PYBPF_JIT_INPROCESS", "PYBPF_DUMP_IR", "PYBPF_DUMP_OPT",
                                      "PYBPF_DUMP_ASM")}
    full_env.update(env or {})
    prelude = textwrap.dedent("""\
        import ctypes, os, signal, sys
        from pybpf.errors import JITError
        from pybpf.jit import codegen, native

        def wx_maps():
            out = []
            for line in open("/proc/self/maps"):
                perms = line.split()[1]
                if "w" in perms and "x" in perms:
                    out.append(line.strip())
            return out
        """)
    proc = run_code(prelude + textwrap.dedent(code), env=full_env, timeout=timeout)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stderr}"
    return proc.stdout


# -- compile errors and refused objects (no code runs: safe in this process) ----------------

def test_compile_symbols_and_no_llvm_here():
    r = codegen.compile_ir(ADD_IR, want_ir=True, want_asm=True)
    assert r.symbols == {"add": 0}
    assert r.text.endswith(b"\xc3")  # ret
    assert r.ir_before == ADD_IR and "define" in r.ir_after and "add" in r.asm
    assert "llvmlite.binding" not in sys.modules


def test_parse_error_is_jiterror_with_llvm_message():
    with pytest.raises(JITError, match="expected type"):
        codegen.compile_ir("define i64 @f( {\n")


def test_verifier_error_is_jiterror():
    bad = ("define i64 @f(i64 %a) {\nentry:\n  br label %x\nx:\n  %v = add i64 %w, 1\n"
           "  %w = add i64 %v, 1\n  ret i64 %v\n}\n")
    with pytest.raises(JITError, match="does not dominate"):
        codegen.compile_ir(bad)


def test_undefined_symbol_refused_naming_the_relocation():
    ir = "@g = external global i64\ndefine i64 @f() {\n  %v = load i64, ptr @g\n  ret i64 %v\n}\n"
    with pytest.raises(JITError, match=r"relocation R_X86_64_\w+ at '\.text'\+0x[0-9a-f]+ "
                                       r"against undefined symbol 'g'"):
        codegen.compile_ir(ir)


def test_writable_data_refused_naming_the_section():
    ir = ("@g = global i64 5\ndefine i64 @f(i64 %x) {\n  store i64 %x, ptr @g\n"
          "  %v = load i64, ptr @g\n  ret i64 %v\n}\n")
    with pytest.raises(JITError, match=r"'\.data' has 8 bytes of writable data"):
        codegen.compile_ir(ir)


def test_constant_pool_is_placed_after_the_code():
    ir = "define double @f(double %x) {\n  %y = fadd double %x, 1.5\n  ret double %y\n}\n"
    image = codegen.compile_ir(ir).image
    sections = {name: (off, size) for name, off, size in image.sections}
    off, size = sections[".rodata.cst8"]
    assert off >= image.code_size and size == 8
    assert image.data[off:off + 8] == struct.pack("<d", 1.5)
    assert not image.fixups  # RIP-relative: resolved when laid out


def test_libcall_refused_with_hint():
    ir = ("declare void @llvm.memset.p0.i64(ptr, i8, i64, i1)\n"
          "define void @f(ptr %p, i64 %n) {\n"
          "  call void @llvm.memset.p0.i64(ptr %p, i8 0, i64 %n, i1 false)\n  ret void\n}\n")
    with pytest.raises(JITError, match="undefined symbol 'memset'.*no-builtins"):
        codegen.compile_ir(ir)


@pytest.mark.parametrize("opt", [0, 2])
def test_calls_between_functions_need_no_relocation(opt):
    ir = ("define i64 @g(i64 %a) noinline {\n  %b = mul i64 %a, %a\n  ret i64 %b\n}\n"
          "define i64 @f(i64 %a) {\n  %r = call i64 @g(i64 %a)\n  %s = call i64 @g(i64 %r)\n"
          "  ret i64 %s\n}\n")
    r = codegen.compile_ir(ir, opt_level=opt)
    assert set(r.symbols) == {"f", "g"}


def test_empty_function_refused():
    # Reading an uninitialised slot is undefined behaviour: LLVM deletes the whole body.
    ir = "define i64 @f() {\n  %p = alloca i64\n  %v = load i64, ptr %p\n  %d = udiv i64 1, %v\n" \
         "  %u = getelementptr i8, ptr null, i64 %d\n  store i64 1, ptr %u\n  unreachable\n}\n"
    with pytest.raises(JITError, match="function 'f' has no code"):
        codegen.compile_ir(ir)


@pytest.mark.parametrize("opt", [1, 2])
def test_bpf_shaped_function_is_self_contained(opt):
    r = codegen.compile_ir(big_ir(), opt_level=opt)
    assert "prog" in r.symbols and len(r.text) > 16


def test_parallel_compiles_share_the_pool():
    results, errors = [], []

    def work(i):
        try:
            results.append(codegen.compile_ir(big_ir(seed=i)).symbols)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4
    assert len(codegen.worker_info()) <= codegen._get_pool().size


def test_dump_switches_print_to_stderr(monkeypatch, capsys):
    monkeypatch.setenv("PYBPF_DUMP_IR", "1")
    monkeypatch.setenv("PYBPF_DUMP_ASM", "1")
    r = codegen.compile_ir(ADD_IR)
    err = capsys.readouterr().err
    assert "before optimisation" in err and "after O2" in err and "leaq" in err
    assert r.ir_after is None and r.asm is None  # not asked for, only dumped


# -- worker life and death ------------------------------------------------------------------

def test_llvm_fatal_error_is_jiterror_and_next_compile_works():
    # Passes the verifier, then LLVM's instruction selection calls report_fatal_error().
    ir = ("declare i64 @llvm.read_register.i64(metadata)\n"
          "define i64 @f() {\n  %r = call i64 @llvm.read_register.i64(metadata !0)\n"
          "  ret i64 %r\n}\n!0 = !{!\"nosuchreg\"}\n")
    with pytest.raises(JITError, match=r"(?s)compile worker \d+ died.*invalid register"):
        codegen.compile_ir(ir)
    assert codegen.compile_ir(ADD_IR).symbols == {"add": 0}


def test_killed_worker_is_replaced_and_crash_is_jiterror():
    out = _child("""
        codegen.compile_ir(ADD_IR)
        [info] = codegen.worker_info()
        os.kill(info["pid"], signal.SIGKILL)
        r = codegen.compile_ir(ADD_IR)          # restarted behind the scenes
        assert r.symbols == {"add": 0}
        assert codegen.worker_info()[0]["pid"] != info["pid"]
        try:
            codegen._get_pool().request({"op": "_abort"}, 30)
        except JITError as e:
            print("crash:", str(e).splitlines()[0])
        assert codegen.compile_ir(ADD_IR).symbols == {"add": 0}
        try:
            codegen._get_pool().request({"op": "_sleep"}, 0.5)
        except JITError as e:
            print("timeout:", e)
        assert codegen.compile_ir(ADD_IR).symbols == {"add": 0}
        print("ok")
        """.replace("ADD_IR", repr(ADD_IR)), env={"PYBPF_JIT_TEST_HOOKS": "1",
                                                 "PYBPF_JIT_WORKERS": "1"})
    assert "crash: compile worker" in out and "SIGABRT" in out
    assert "timeout: compile timed out after 0.5 s" in out
    assert out.rstrip().endswith("ok")


def test_inprocess_mode_compiles_here():
    out = _child(f"""
        r = codegen.compile_ir({ADD_IR!r})
        print(r.symbols, "llvmlite.binding" in sys.modules, codegen.worker_info())
        """, env={"PYBPF_JIT_INPROCESS": "1"})
    assert out.strip() == "{'add': 0} True []"


# -- running the code -----------------------------------------------------------------------

def test_compiled_code_runs_and_process_stays_wx_clean():
    out = _child(f"""
        r = codegen.compile_ir({ADD_IR!r})
        a = native.place(r.text, "add")
        add = native.make_caller(a.address + r.symbols["add"])
        print(add(40, 2), add(2**64 - 1, 2))
        print("binding" if "llvmlite.binding" in sys.modules else "no-binding")
        print("wx", wx_maps())
        """)
    lines = out.splitlines()
    assert lines == ["42 1", "no-binding", "wx []"]


BRIDGE_CHILD = """
    from llvmlite import ir
    calls = []

    def five(a, b, c, d, e):
        calls.append((a, b, c, d, e))
        return a * 10000 + b * 1000 + c * 100 + d * 10 + e

    text, keep = native.make_python_bridge_ir(five)
    r = codegen.compile_ir(text)
    a = native.place(r.text, "bridge")
    bridge = native.make_caller(a.address + r.symbols["bridge"], argtypes=(ctypes.c_uint64,) * 5,
                                holds_gil=True)
    print("five", bridge(1, 2, 3, 4, 5), calls)

    # All ones is a value, not an error; a result that is no int is a TypeError.
    text, keep_ones = native.make_python_bridge_ir(lambda *a: -1, name="ones")
    r = codegen.compile_ir(text)
    ones = native.make_caller(native.place(r.text, "ones").address + r.symbols["ones"],
                              argtypes=(ctypes.c_uint64,) * 5, holds_gil=True)
    print("ones", ones(0, 0, 0, 0, 0) == 2**64 - 1)
    text, keep_str = native.make_python_bridge_ir(lambda *a: "nope", name="text")
    r = codegen.compile_ir(text)
    bad = native.make_caller(native.place(r.text, "text").address + r.symbols["text"],
                             argtypes=(ctypes.c_uint64,) * 5, holds_gil=True)
    try:
        bad(0, 0, 0, 0, 0)
    except TypeError as e:
        print("typeerror")

    # A "program" calling a helper twice; the first call raises, so the second must not run.
    seen = []

    def boom(x, *rest):
        seen.append(x)
        if x == 7:
            raise KeyError("helper failed")
        return None

    helper = native.PythonHelper(boom, name="boom")
    m = ir.Module()
    I64 = native.I64
    fn = ir.Function(m, ir.FunctionType(I64, [I64, I64]), name="prog")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    v, failed = helper.call(b, [fn.args[0]])
    with b.if_then(failed, likely=False):
        b.ret(I64(0))
    v2, failed2 = helper.call(b, [b.add(v, I64(100))])
    b.ret(b.add(v2, fn.args[1]))
    r = codegen.compile_ir(str(m))
    pa = native.place(r.text, "prog")
    prog = native.make_caller(pa.address + r.symbols["prog"], holds_gil=True)
    print("none", prog(1, 5), seen)       # None counts as 0: 0 + 5
    seen.clear()
    try:
        prog(7, 5)
    except KeyError as e:
        print("raised", repr(e), seen)
    print("wx", wx_maps())
    """


def test_python_bridge_calls_helper_and_propagates_exception():
    out = _child(BRIDGE_CHILD).splitlines()
    assert out[0] == "five 12345 [(1, 2, 3, 4, 5)]"
    assert out[1:3] == ["ones True", "typeerror"]
    assert out[3] == "none 5 [1, 100]"
    assert out[4] == "raised KeyError('helper failed') [7]"
    assert out[5] == "wx []"


def test_test_run_driver():
    out = _child("""
        from llvmlite import ir
        r = codegen.compile_ir("define i64 @f(i64 %c, i64 %n) {\\n  %s = add i64 %c, %n\\n"
                               "  ret i64 %s\\n}\\n")
        f = native.place(r.text, "f").address + r.symbols["f"]
        d = native.get_driver()
        assert native.get_driver() is d
        print(d.run(f, 40, 2, repeat=0)[0], d.run(f, 40, 2, repeat=1)[0])
        r0, ns = d.run(f, 40, 2, repeat=1_000_000)
        print(r0, ns)

        # The checked loop stops at the first helper exception and raises it.
        count = []
        def h(*a):
            count.append(1)
            if len(count) == 3:
                raise ValueError("third")
            return 1
        helper = native.PythonHelper(h, name="h")
        m = ir.Module()
        fn = ir.Function(m, ir.FunctionType(native.I64, [native.I64, native.I64]), name="p")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        v, failed = helper.call(b, [])
        b.ret(v)
        r = codegen.compile_ir(str(m))
        p = native.place(r.text, "p").address + r.symbols["p"]
        try:
            d.run(p, 0, 0, repeat=100, python_helpers=True)
        except ValueError as e:
            print("stopped", len(count), e)
        """).splitlines()
    assert out[0] == "42 42"
    r0, ns = map(int, out[1].split())
    assert r0 == 42
    assert 0 < ns < 1_000_000 * 200  # under 200 ns per run even on a slow CI machine
    assert out[2] == "stopped 3 third"
