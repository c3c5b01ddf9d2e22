"""Fuzzing pybpf with its own invariants (``pybpf fuzz TARGET --seconds N``).

Targets, each a generator of inputs from a seed and a check of one input:

* ``asm``: assembler text (mutated sample lines, random tokens) -> ``pybpf.assemble``;
* ``decode``: bytes (random, or real opcodes with random fields) -> ``Program.from_bytes`` and the
  disassembler;
* ``elf``: mutated and truncated sample objects -> the ELF loader;
* ``engines``: random and mutated programs -> the verifier, then the interpreter and, for the
  programs whose every memory access is a constant stack offset (safe without the full
  verifier), the JIT; both must give the same r0 and stack-derived result;
* ``maps``: hash, array and LRU map operations from four Python threads at once; the map must
  end up holding exactly what the threads' own records say.

Invariants: only ``BPFError`` subclasses escape the library; no signal and no hang past the
per-case budget (each case runs in a worker subprocess with a time limit; a worker that dies or
hangs fails that case and is replaced); engines agree; no mapping is writable and executable. The runner prints a progress line, then
cases run, cases per second, failures and their distinct messages; each failing input is saved
(``--save DIR``) as ``TARGET-<hash>.json`` for tests/fuzz/test_fuzz.py to replay as a
regression test.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from .errors import BPFError

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("asm", "decode", "elf", "engines", "maps")
CASE_BUDGET = 10.0          # seconds per case before the worker counts as hung


# -- generators: seed -> JSON-able input --------------------------------------------------------

_ASM_LINES = ("r0 = 0", "r1 = r10", "r1 += -8", "*(u64 *)(r10 - 8) = r1", "r0 = *(u64 *)(r1 + 0)",
              "if r0 > 5 goto +1", "exit", "call 1", "r2 = 0x7fffffff ll", "lock *(u64 *)(r10 - 8) += r1",
              "mov %r0, 1", "add %r0, %r1", "ldxdw %r0, [%r1+8]", "ja +0", "l: r0 += 1", "goto l",
              "r0 = be16 r0", "w0 = w1", "r0 = addr_space_cast(r1, 0x0, 0x1)", ".map m type=hash",
              "r1 = map[m] ll", "callx r1", "may_goto +1", "r0 s>>= 63", "w1 /= 0")
_TOKENS = ("r", "w", "0", "1", "-", "+", "=", "*", "(", ")", "u64", "u8", "goto", "if", ">",
           "exit", "call", "ll", "lock", "%", "[", "]", ",", ":", "l", "0x", "ffffffff", " ",
           "\n", "#", ";", "\t", "é", "\x00", "s>", "<<=", "be", "le", "bswap")


def gen_asm(rng: random.Random) -> dict:
    lines = []
    for _ in range(rng.randint(1, 12)):
        if rng.random() < 0.6:
            line = rng.choice(_ASM_LINES)
            if rng.random() < 0.3:      # mutate a character
                i = rng.randrange(len(line))
                line = line[:i] + rng.choice(_TOKENS) + line[i + 1:]
        else:
            line = "".join(rng.choice(_TOKENS) for _ in range(rng.randint(1, 10)))
        lines.append(line)
    return {"text": "\n".join(lines), "syntax": rng.choice(("auto", "llvm", "ubpf"))}


def gen_decode(rng: random.Random) -> dict:
    from . import isa

    if rng.random() < 0.3:
        data = rng.randbytes(rng.randint(0, 96))
    else:
        opcodes = sorted(isa.FORMS_BY_OPCODE)
        data = b""
        for _ in range(rng.randint(1, 12)):
            regs = rng.choice((0, rng.randrange(256)))
            off = rng.choice((0, 1, -1, rng.randrange(-32768, 32768)))
            imm = rng.choice((0, 1, -1, rng.randrange(-(1 << 31), 1 << 31)))
            data += bytes([rng.choice(opcodes), regs]) + (off & 0xFFFF).to_bytes(2, "little") \
                + (imm & 0xFFFFFFFF).to_bytes(4, "little")
    return {"hex": data.hex()}


def _sample_objects() -> list[Path]:
    dirs = [ROOT / "tests" / "data" / "elf", ROOT / "samples" / "c"]
    return sorted(p for d in dirs if d.is_dir() for p in d.glob("*.o"))


def gen_elf(rng: random.Random) -> dict:
    objs = _sample_objects()
    if not objs:
        return {"hex": rng.randbytes(64).hex(), "base": ""}
    base = rng.choice(objs)
    data = bytearray(base.read_bytes())
    r = rng.random()
    if r < 0.3:
        data = data[:rng.randrange(len(data))]                  # truncated
    else:
        for _ in range(rng.randint(1, 8)):                     # flipped bytes
            i = rng.randrange(len(data))
            data[i] = rng.choice((0, 0xFF, rng.randrange(256), data[i] ^ (1 << rng.randrange(8))))
    return {"hex": bytes(data).hex(), "base": base.name}


_SAFE_OFFS = (-8, -16, -24, -32)


def gen_engines(rng: random.Random) -> dict:
    """A program of scalar ALU on r0-r9, stack stores and loads at constant offsets from r10
    and forward jumps (plus, mutated, anything): encoded as hex."""
    from . import isa
    from .insn import encode, make

    alu = [f for f in isa.FORMS if f.kind == "alu"]
    jumps = [f for f in isa.FORMS if f.kind == "jcond"]
    n = rng.randint(2, 24)
    raw: list = []
    for r in range(10):                             # every register initialised
        raw += make("mov64_imm", r, imm=rng.randrange(-100, 100))
    for off in _SAFE_OFFS:                          # and every stack slot read later
        raw += make("stxdw", 10, src=rng.randrange(10), off=off)
    for i in range(n):
        c = rng.random()
        if c < 0.55:
            f = rng.choice(alu)
            kw = {"imm": rng.choice((0, 1, -1, 7, 63, 64, rng.randrange(-(1 << 31), 1 << 31)))}
            if f.fields.get("src") == "reg":
                kw = {"src": rng.randrange(10)}
            try:
                raw += make(f.name, rng.randrange(10), **kw)
            except Exception:               # noqa: BLE001 -- a form that needs other fields
                continue
        elif c < 0.7:
            raw += make("stxdw", 10, src=rng.randrange(10), off=rng.choice(_SAFE_OFFS))
        elif c < 0.85:
            raw += make("ldxdw", rng.randrange(10), src=10, off=rng.choice(_SAFE_OFFS))
        else:
            f = rng.choice(jumps)
            try:
                raw += make(f.name, rng.randrange(10), imm=rng.randrange(-5, 5),
                            off=rng.randint(0, 2), src=rng.randrange(10))
            except Exception:               # noqa: BLE001
                continue
    raw += make("exit")
    data = bytearray(encode(raw))
    if rng.random() < 0.3:                          # mutated: any field of any slot
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(data))
            data[i] = rng.randrange(256)
    return {"hex": bytes(data).hex(), "mem": rng.randbytes(16).hex()}


def gen_maps(rng: random.Random) -> dict:
    return {"type": rng.choice(("hash", "lru_hash", "array")), "seed": rng.randrange(1 << 30),
            "ops": rng.randint(50, 300), "max_entries": rng.choice((4, 16, 64))}


GENERATORS = {"asm": gen_asm, "decode": gen_decode, "elf": gen_elf, "engines": gen_engines,
              "maps": gen_maps}


# -- checks: input -> result (raise AssertionError for a broken invariant) ------------------------

def check_asm(case: dict):
    from .asm import assemble
    try:
        prog = assemble(case["text"], syntax=case["syntax"])
    except BPFError:
        return "refused"
    from .disasm import disassemble
    disassemble(prog)
    return "assembled"


def check_decode(case: dict):
    from .disasm import disassemble
    from .program import Program
    try:
        prog = Program.from_bytes(bytes.fromhex(case["hex"]))
    except BPFError:
        return "refused"
    for syntax in ("llvm", "ubpf", "kernel"):
        disassemble(prog, syntax=syntax)
    return "decoded"


def check_elf(case: dict):
    from .elf import load_elf_program, parse_object
    data = bytes.fromhex(case["hex"])
    try:
        obj = parse_object(data, "fuzz")
    except BPFError:
        return "refused"
    for name in [getattr(p, "name", p) for p in getattr(obj, "programs", [])][:4] or [None]:
        try:
            load_elf_program(data, "fuzz", name)
        except BPFError:
            pass
    return "parsed"


def _stack_only(prog) -> bool:
    """Every memory access is r10 + a constant offset inside the frame, r10 is never written,
    no calls: such a program cannot touch other memory, so its JIT code is safe to run."""
    for _, f, i in prog.instructions():
        if f.kind in ("call", "callx", "ldabs", "atomic", "lddw", "cast"):
            return False
        if f.kind in ("ldx", "st", "stx"):
            base = i.src if f.kind == "ldx" else i.dst
            if base != 10 or not -512 <= i.off <= -(f.size or 8):
                return False
        if getattr(f, "fields", None) and "dst" in f.fields and i.dst == 10 and \
                f.kind not in ("st", "stx", "jcond", "ja"):
            return False
    return True


def check_engines(case: dict):
    from .program import Program
    from .vm import VM
    try:
        prog = Program.from_bytes(bytes.fromhex(case["hex"]))
    except BPFError:
        return "refused at decode"
    mem = bytes.fromhex(case["mem"])
    vm = VM(seed=1)
    # random programs compare the engines' semantics: structural checks only (the full
    # verifier refuses nearly all of them; unverified JIT code runs with its budget)
    try:
        vm.verify(prog, full=False)
    except BPFError:
        return "rejected"
    results = {}
    engines = ["interp"] + (["jit"] if _stack_only(prog) else [])
    for engine in engines:
        try:
            lp = vm.load(prog, engine=engine, insn_limit=100_000, verify="structural")
            results[engine] = ("r0", lp.run(mem=mem), lp.last_mem)
        except BPFError as e:
            results[engine] = ("error", type(e).__name__)
    if "jit" in results:
        from .jit.execmem import wx_mappings
        assert not wx_mappings(), f"a writable and executable mapping: {wx_mappings()[0]}"
    if len(results) == 2:
        a, b = results["interp"], results["jit"]
        # the JIT stops loops by budget counted per iteration, the interpreter per
        # instruction: a limit error on either side is not a disagreement
        if a[0] == b[0] == "r0":
            assert a == b, f"engines differ: interp {a[:2]} jit {b[:2]}"
    return "ran " + "+".join(engines)


def check_maps(case: dict):
    from .runtime.maps import create_map
    kind, n = case["type"], case["max_entries"]
    m = create_map(kind, 4, 8, n)
    owned: list[dict] = [{} for _ in range(4)]
    errors: list[str] = []

    def worker(t: int):
        rng = random.Random(case["seed"] * 10 + t)
        mine = owned[t]
        try:
            for _ in range(case["ops"]):
                k = t * 1000 + rng.randrange(8) if kind != "array" else rng.randrange(n)
                kb, v = k.to_bytes(4, "little"), rng.randrange(1 << 60).to_bytes(8, "little")
                op = rng.random()
                try:
                    if op < 0.5:
                        m.sys_update(kb, v)
                        mine[k] = v
                    elif op < 0.8 and kind != "array":
                        m.sys_delete(kb)
                        mine.pop(k, None)
                    else:
                        m.sys_lookup(kb)
                except BPFError:
                    if kind != "array":
                        mine.pop(k, None) if op >= 0.5 else None
        except Exception as e:      # noqa: BLE001 -- reported as the failure
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    if kind == "hash":       # an LRU map may evict; an array's slots are shared by threads
        want = {k.to_bytes(4, "little"): v for d in owned for k, v in d.items()}
        got = {k: m.sys_lookup(k) for k in m._raw_keys()}
        assert got == want, f"hash holds {len(got)} keys, the threads' records say {len(want)}"
    assert len(m._raw_keys()) <= n
    return "consistent"


CHECKS = {"asm": check_asm, "decode": check_decode, "elf": check_elf, "engines": check_engines,
          "maps": check_maps}


def case_input(target: str, seed: int, index: int) -> dict:
    return GENERATORS[target](random.Random(f"{target}:{seed}:{index}"))


def run_case(target: str, case: dict) -> dict:
    """One case in this process: {"ok": True, "result"} or {"ok": False, "message"}."""
    try:
        return {"ok": True, "result": CHECKS[target](case)}
    except BPFError as e:       # a check may let one escape where anything goes
        return {"ok": True, "result": f"refused: {type(e).__name__}"}
    except AssertionError as e:
        return {"ok": False, "message": f"invariant: {str(e).splitlines()[0][:200]}"}
    except Exception as e:      # noqa: BLE001 -- the invariant: only BPFError escapes
        return {"ok": False, "message": f"escaped {type(e).__name__}: "
                                        f"{str(e).splitlines()[0][:160] if str(e) else ''}"}


# -- the worker (a subprocess) and the runner ---------------------------------------------------

def worker_main() -> int:
    """Read JSON cases (one per line) from stdin, answer each with one JSON line."""
    for line in sys.stdin:
        req = json.loads(line)
        out = run_case(req["target"], req["case"])
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    return 0


class _Worker:
    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "pybpf.fuzz"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env=env)
        self._line: list[str] = []

    def ask(self, target: str, case: dict, budget: float) -> dict:
        self.proc.stdin.write(json.dumps({"target": target, "case": case}) + "\n")
        self.proc.stdin.flush()
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(budget)
        if reader.is_alive():
            self.kill()
            return {"ok": False, "message": f"hang: no answer within {budget:g} s"}
        if not result or not result[0]:
            code = self.proc.wait()
            return {"ok": False, "message": f"worker died: signal {-code}" if code < 0 else
                    f"worker died: exit {code}"}
        return json.loads(result[0])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()


def fuzz(target: str, seconds: float, seed: int = 0, save: str | None = None,
         progress=None, max_cases: int | None = None, budget: float = CASE_BUDGET) -> dict:
    """Run ``target`` for ``seconds`` (or ``max_cases``); returns the figures."""
    if target not in TARGETS:
        raise ValueError(f"unknown fuzz target {target!r} (one of {', '.join(TARGETS)})")
    worker = _Worker()
    start = last = time.monotonic()
    cases, failures, messages, saved = 0, 0, {}, []
    results: dict[str, int] = {}
    try:
        while time.monotonic() - start < seconds and (max_cases is None or cases < max_cases):
            case = case_input(target, seed, cases)
            if not worker.alive():
                worker = _Worker()
            out = worker.ask(target, case, budget)
            cases += 1
            if out["ok"]:
                key = str(out["result"])
                results[key] = results.get(key, 0) + 1
            else:
                failures += 1
                msg = out["message"]
                messages[msg] = messages.get(msg, 0) + 1
                if not worker.alive():
                    worker = _Worker()
                if save:
                    saved.append(save_case(save, target, case, msg))
            now = time.monotonic()
            if progress is not None and now - last >= 1.0:
                last = now
                progress(f"{target}: {cases} cases, {cases / (now - start):.0f}/s, "
                         f"{failures} failures, {len(messages)} distinct")
    finally:
        worker.close()
    elapsed = time.monotonic() - start
    return {"target": target, "seed": seed, "cases": cases, "seconds": round(elapsed, 2),
            "cases_per_second": round(cases / elapsed, 1) if elapsed else 0.0,
            "failures": failures, "distinct": messages, "results": results, "saved": saved}


def save_case(directory: str, target: str, case: dict, message: str) -> str:
    text = json.dumps({"target": target, "case": case, "message": message}, sort_keys=True)
    name = f"{target}-{hashlib.sha1(text.encode()).hexdigest()[:12]}.json"
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return str(path)


def format_report(r: dict) -> str:
    lines = [f"{r['target']}: {r['cases']} cases in {r['seconds']} s "
             f"({r['cases_per_second']}/s), {r['failures']} failures, "
             f"{len(r['distinct'])} distinct"]
    for msg, n in sorted(r["distinct"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {n:6d}  {msg}")
    for path in r["saved"][:20]:
        lines.append(f"  saved {path}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(worker_main())
