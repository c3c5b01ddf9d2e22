"""The ``pybpf`` command line (also ``python -m pybpf``).

Only this module prints. Bad input (and bad arguments) exit with status 2 and a clear message,
never a traceback; a program the verifier rejects or a failing test exits 1.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback

from .errors import AsmError, BPFError, VerifierError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 70


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 on usage errors; keep that, in one line
        self.exit(EXIT_USAGE, f"pybpf: error: {message} (see {self.prog} --help)\n")


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _int_in(lo: int, hi: int):
    """An argparse type: an integer (any base prefix) in [lo, hi]."""
    def parse(text: str) -> int:
        value = _int(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text!r} is out of range [{lo}, {hi}]")
        return value
    parse.__name__ = "integer"
    return parse


def _float_in(lo: float, hi: float):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text!r} is out of range [{lo:g}, {hi:g}]")
        return value
    parse.__name__ = "number"
    return parse


# Ranges of the numeric options: what the runtime can honour (an instruction budget of at most
# 2**32, the kernel's u32 test-run sizes), and counts that finish in reasonable time.
INSN_LIMIT = _int_in(1, 1 << 32)
MEM_SIZE = _int_in(0, (1 << 32) - 1)
ROWS = _int_in(1, 100_000)
PROGRAMS = _int_in(0, 10_000)
SEED = _int_in(0, (1 << 64) - 1)


def _mem_arg(args) -> bytes | None:
    from .inputs import InputError, read_input
    if args.mem is not None and args.mem_file is not None:
        raise InputError("--mem and --mem-file exclude each other")
    if args.mem is not None:
        hexstr = "".join(args.mem.split())
        try:
            return bytes.fromhex(hexstr)
        except ValueError:
            raise InputError(f"--mem: not hex bytes: {args.mem!r}") from None
    if args.mem_file is not None:
        return read_input(args.mem_file)[0]
    return None


def cmd_asm(args) -> int:
    from .inputs import load_program
    prog = load_program(args.input, "asm" if args.format is None else args.format, args.syntax)
    data = prog.to_bytes()
    if args.output and args.output != "-":
        with open(args.output, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)
    return EXIT_OK


def cmd_disasm(args) -> int:
    from .disasm import disassemble
    from .inputs import load_program
    prog = load_program(args.input, args.format, "auto", getattr(args, "section", None))
    sys.stdout.write(disassemble(prog, syntax=args.syntax))
    return EXIT_OK


def cmd_verify(args) -> int:
    from .inputs import load_program
    from .vm import VM
    prog = load_program(args.input, args.format, "auto", args.section)
    vm = VM()
    level = 2 if args.verbose else 0
    try:
        log = vm.verify(prog, prog_type=args.prog_type, log_level=level)
    except VerifierError as e:
        if args.verbose and e.log:
            sys.stdout.write(e.log if e.log.endswith("\n") else e.log + "\n")
        print(f"{args.input}: rejected: {e}", file=sys.stderr)
        if args.explain:
            print(e.explain(), file=sys.stderr)
        return EXIT_FAIL
    if args.verbose and log:
        sys.stdout.write(log if log.endswith("\n") else log + "\n")
    print(f"{args.input}: accepted")
    return EXIT_OK


def _hex_or_file(args, name: str) -> bytes | None:
    """``--NAME HEX`` or ``--NAME-file F`` (at most one of them)."""
    from .inputs import InputError, read_input
    text, path = getattr(args, name), getattr(args, name + "_file")
    if text is not None and path is not None:
        raise InputError(f"--{name} and --{name}-file exclude each other")
    if text is not None:
        try:
            return bytes.fromhex("".join(text.split()))
        except ValueError:
            raise InputError(f"--{name}: not hex bytes: {text!r}") from None
    return read_input(path)[0] if path is not None else None


def cmd_run(args) -> int:
    from .inputs import load_program
    from .vm import VM
    prog = load_program(args.input, args.format, "auto", args.section)
    mem = _mem_arg(args)
    ctx, data = _hex_or_file(args, "ctx"), _hex_or_file(args, "data")
    vm = VM()
    kwargs = {}
    if args.insn_limit is not None:
        kwargs["insn_limit"] = args.insn_limit
    # the program type: --prog-type, else the ELF section's, else mem
    lp = vm.load(prog, prog_type=args.prog_type, engine=args.engine, verify=not args.no_verify,
                 **kwargs)
    run_kw = {"mem": mem} if lp.prog_type == "mem" else {"ctx": ctx}
    if data is not None:
        run_kw["data"] = data
    if lp.prog_type == "mem" and ctx is not None:
        from .inputs import InputError
        raise InputError("--ctx is for context program types; prog_type mem takes --mem")
    if lp.prog_type != "mem" and mem is not None:
        from .inputs import InputError
        raise InputError(f"--mem is for prog_type mem; {lp.prog_type} takes --ctx/--data")
    trace = None
    if args.trace:
        def trace(line):
            print(line, file=sys.stderr)
    try:
        r0 = lp.run(trace=trace, **run_kw) if trace else lp.run(**run_kw)
        print(f"0x{r0:x}")
        if args.dump_maps:
            for name, m in lp.maps.items():
                if m.type == "arena":  # no keys to walk, as bpftool says: show its pages instead
                    print(f"map {name} (arena): {m.pages_allocated} pages allocated")
                    continue
                print(f"map {name} ({m.type}):")
                print(m.dump().rstrip("\n"))
    finally:
        for line in vm.trace_output():
            print(line, file=sys.stderr)
        lp.close()
    return EXIT_OK


def cmd_test(args) -> int:
    from .inputs import InputError
    from .testrunner import FAIL, SKIP, check_test_file, collect, run_file, summary_line
    files = collect(args.paths)
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        print(f"pybpf: no such file: {missing[0]}", file=sys.stderr)
        return EXIT_USAGE
    for p in args.paths:      # a directory without tests, or a named file that is not one
        if os.path.isdir(p) and not any(str(f).startswith(os.path.join(p, "")) for f in files):
            raise InputError(f"{p}: no .data test files in this directory")
    for p in args.paths:
        if not os.path.isdir(p):
            check_test_file(p)
    outcomes = []
    for f in files:
        o = run_file(f, engine=args.engine, any_error=args.any_error, insn_limit=args.insn_limit,
                     verify=args.verify)
        outcomes.append(o)
        if o.status == FAIL:
            print(f"FAIL {o.path}: {o.message}")
        elif o.status == SKIP and (args.verbose or "unknown section" in o.message):
            print(f"SKIP {o.path}: {o.message}")
        elif args.verbose:
            print(f"PASS {o.path}")
    print(summary_line(outcomes))
    return EXIT_FAIL if any(o.status == FAIL for o in outcomes) else EXIT_OK


def _jit_cache(what: str) -> int:
    from .inputs import InputError
    from .jit import cache
    from . import verdicts
    if what == "clear":
        n, v = cache.clear(), verdicts.clear()
        sys.stdout.write(f"removed {n} entr{'y' if n == 1 else 'ies'} and {v} verifier "
                         f"verdict{'' if v == 1 else 's'} from "
                         f"{cache.directory() or '(cache off)'}\n")
        return EXIT_OK
    if what != "stats":
        raise InputError(f"--cache takes stats or clear, not {what!r}")
    s = cache.stats()
    if not s["enabled"]:
        sys.stdout.write("JIT code cache: off (PYBPF_JIT_CACHE=off)\n")
        return EXIT_OK
    v = verdicts.stats()
    sys.stdout.write(f"JIT code cache: {s['directory']}\n"
                     f"entries: {s['entries']}, {s['bytes']} B of {s['limit']} B bound\n"
                     f"verifier verdicts: {v['entries']}, {v['bytes']} B of {v['limit']} B "
                     f"bound\n")
    return EXIT_OK


def cmd_jit(args) -> int:
    import importlib.util

    if args.cache:
        if args.input is not None:
            from .inputs import InputError
            raise InputError("--cache takes no input file")
        return _jit_cache(args.cache)
    if args.input is None:
        from .inputs import InputError
        raise InputError("pybpf jit needs an input file (or --cache stats|clear)")

    from .inputs import load_program
    from .jit import compile_program
    from .jit.placement import (format_placement, format_program_placement, native_listing,
                                placement, program_placement)
    from .vm import VM
    prog = load_program(args.input, args.format, "auto", args.section)
    vm = VM()
    if not args.no_verify:
        vm.verify(prog, prog_type=args.prog_type)
    show = args.show or ["placement"]
    capstone = args.disassembler == "capstone" or (
        args.disassembler == "auto" and importlib.util.find_spec("capstone") is not None)
    name = prog.name
    if name == "prog" and args.input != "-":     # assembly has no name of its own: the file's
        name = os.path.splitext(os.path.basename(args.input))[0] or name
    from .loaded import jit_env
    from .runtime.contexts import canonical_type
    _, arena, values64 = vm.resolve(prog)   # maps, arena and ld_imm64 values, as a load does
    ptype = canonical_type(args.prog_type or getattr(prog, "prog_type", None) or "mem")
    # --no-verify shows the code an unverified load gets: its run budget is charged at each
    # loop head's latch (the cell only has to exist while the code is placed)
    import ctypes
    budget = (ctypes.c_int64 * 1)() if args.no_verify else None
    env = jit_env(vm, arena, ptype, verified=budget is None,
                  budget_cell=ctypes.addressof(budget) if budget is not None else 0)
    baseline = args.tier == "baseline"
    if baseline and "ir" in show:
        from .errors import JITError
        raise JITError("the baseline tier has no LLVM IR (it emits x86-64 directly): "
                       "--show asm or placement")
    jp = compile_program(prog, vm.helpers, opt_level=args.opt_level, name=name,
                         want_ir="ir" in show, want_asm="asm" in show and not capstone
                         and not baseline, values64=values64, env=env,
                         tier="baseline" if baseline else None)
    try:
        parts = []
        for what in show:
            if what == "ir":
                parts.append(f"; ---- LLVM IR of {jp.name!r} before optimisation ----\n"
                             f"{jp.ir_before.rstrip()}\n\n"
                             f"; ---- LLVM IR after -O{jp.opt_level} ----\n"
                             f"{jp.ir_after.rstrip()}\n")
            elif what == "asm":
                parts.append(native_listing(jp, args.asm_syntax,
                                            "capstone" if capstone else "llvm"))
            else:
                rep = placement()
                where = program_placement(jp, rep)
                parts.append(format_program_placement(where) + "\n" + format_placement(
                    rep, highlight=[where["address"]], limit=args.limit))
        sys.stdout.write("\n".join(parts))
    finally:
        jp.close()
    return EXIT_OK


def cmd_packs(args) -> int:
    from .inputs import InputError
    if args.programs < 0 or args.unload_every < 0:
        raise InputError("--programs and --unload-every take a count >= 0")
    if args.backend:
        os.environ["PYBPF_EXECMEM_BACKEND"] = args.backend   # read when the allocator is made
    from .jit.placement import format_placement, placement, placement_svg, sample_programs
    from .vm import VM
    vm = VM()
    loaded = []
    try:
        for prog in sample_programs(args.programs, seed=args.seed):
            loaded.append(vm.load(prog, engine="jit"))
        from .jit import tiers
        tiers.drain()       # every program on its -O2 code: the quick code's chunks are free
        if args.unload_every:
            for lp in loaded[::args.unload_every]:
                lp.close()
        rep = placement()
        if args.json:
            import json
            sys.stdout.write(json.dumps(rep, indent=1) + "\n")
        else:
            sys.stdout.write(format_placement(rep, limit=args.limit))
        if args.svg:
            try:
                with open(args.svg, "w") as f:
                    f.write(placement_svg(rep, title=f"pybpf packs: {args.programs} sample "
                                                     f"programs loaded"))
            except OSError as e:
                raise InputError(f"{args.svg}: {e.strerror}") from None
            print(f"wrote {args.svg}: {len(rep['packs'])} pack(s), {rep['programs']} "
                  "allocation(s)", file=sys.stderr)
    finally:
        for lp in loaded:
            lp.close()
    return EXIT_OK


def cmd_bench(args) -> int:
    from .benchmarks.run import format_report, goals_met, run_suite, to_json
    from .inputs import InputError
    try:
        results = run_suite(quick=args.quick, sections=args.only,
                            report=lambda line: print(f"bench: {line}", file=sys.stderr))
    except ValueError as e:
        raise InputError(str(e)) from None
    sys.stdout.write(format_report(results))
    if args.json:
        import json
        try:
            with open(args.json, "w") as f:
                json.dump(to_json(results), f, indent=1, default=str)
        except OSError as e:
            raise InputError(f"{args.json}: {e.strerror}") from None
    failed = any(s.status == "failed" for s in results["sections"])
    return EXIT_FAIL if failed or (args.strict and not goals_met(results)) else EXIT_OK


def cmd_fuzz(args) -> int:
    from .fuzz import format_report, fuzz
    r = fuzz(args.target, args.seconds, seed=args.seed, save=args.save, isolate=args.isolate,
             progress=lambda line: print(line, file=sys.stderr, flush=True))
    sys.stdout.write(format_report(r))
    return EXIT_FAIL if r["failures"] else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pybpf", description="BPF toolchain and virtual machine in Python")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    fmt = dict(choices=("asm", "bin", "data", "elf"), default=None,
               help="force the input kind (default: detected from content)")

    s = sub.add_parser("asm", help="assemble to raw bytecode")
    s.add_argument("input", help="assembly file, or - for stdin")
    s.add_argument("-o", "--output", help="output file (default: stdout)")
    s.add_argument("--syntax", choices=("auto", "llvm", "ubpf"), default="auto")
    s.add_argument("--format", **fmt)
    s.set_defaults(func=cmd_asm)

    s = sub.add_parser("disasm", help="disassemble bytecode, assembly, .data or ELF input")
    s.add_argument("input")
    s.add_argument("--syntax", choices=("llvm", "ubpf", "kernel"), default="llvm")
    s.add_argument("--format", **fmt)
    s.add_argument("--section", help="ELF: the program (function or section) to show")
    s.set_defaults(func=cmd_disasm)

    s = sub.add_parser("verify", help="run the verifier")
    s.add_argument("input")
    s.add_argument("--prog-type", default=None,
                   help="program type (default: from the ELF section, else mem)")
    s.add_argument("--mem-size", type=MEM_SIZE, default=None)
    s.add_argument("-v", "--verbose", action="store_true", help="print the full log")
    s.add_argument("--explain", action="store_true",
                   help="when rejected, explain why: the failing instruction and source line, "
                        "the branches taken to reach it, where the register got its type")
    s.add_argument("--format", **fmt)
    s.add_argument("--section", help="ELF: the program (function or section) to verify")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("run", help="run a program once and print r0")
    s.add_argument("input")
    s.add_argument("--engine", choices=("interp", "jit"), default="interp")
    s.add_argument("--mem", help="memory as hex bytes")
    s.add_argument("--mem-file", help="memory from a file")
    s.add_argument("--no-verify", action="store_true")
    s.add_argument("--insn-limit", type=INSN_LIMIT, default=None)
    s.add_argument("--trace", action="store_true", help="print each executed instruction")
    s.add_argument("--dump-maps", action="store_true",
                   help="after the run, print the program's maps in bpftool's dump format")
    s.add_argument("--format", **fmt)
    s.add_argument("--section", help="ELF: the program (function or section) to run")
    s.add_argument("--prog-type", default=None,
                   help="program type (default: from the ELF section, else mem)")
    s.add_argument("--ctx", help="context as hex bytes (syscall, skb, xdp, tracepoint types)")
    s.add_argument("--ctx-file", help="context from a file")
    s.add_argument("--data", help="packet as hex bytes (skb and xdp types)")
    s.add_argument("--data-file", help="packet from a file")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("test", help="run .data test files")
    s.add_argument("paths", nargs="+")
    s.add_argument("--engine", choices=("interp", "jit", "both"), default="interp")
    s.add_argument("--any-error", action="store_true",
                   help="an expected-error file passes on any refusal at the implied stage")
    s.add_argument("--insn-limit", type=INSN_LIMIT, default=None)
    s.add_argument("--verify", action="store_true",
                   help="run the whole verifier on each program (default: structural checks)")
    s.add_argument("-v", "--verbose", action="store_true")
    s.set_defaults(func=cmd_test)

    s = sub.add_parser("jit", help="JIT-compile a program and show its IR, x86-64 code or place")
    s.add_argument("input", nargs="?")
    s.add_argument("--cache", metavar="stats|clear",
                   help="the persistent code cache: show its size or empty it (no input)")
    s.add_argument("--show", action="append", choices=("ir", "asm", "placement"),
                   help="what to print (repeatable; default: placement)")
    s.add_argument("-O", "--opt-level", type=int, choices=(0, 1, 2, 3), default=2)
    s.add_argument("--tier", choices=("llvm", "baseline"), default="llvm",
                   help="baseline: the template JIT's code (no LLVM; jit/baseline.py)")
    s.add_argument("--asm-syntax", choices=("att", "intel"), default="att",
                   help="x86-64 syntax of --show asm (Intel needs capstone)")
    s.add_argument("--disassembler", choices=("auto", "capstone", "llvm"), default="auto",
                   help="capstone on the placed bytes (auto: when installed) or LLVM's output")
    s.add_argument("--limit", type=ROWS, default=40, help="program rows per pack (placement)")
    s.add_argument("--no-verify", action="store_true",
                   help="skip the verifier and compile the code of an unverified load (a run "
                        "budget charged at loop heads)")
    s.add_argument("--section", help="ELF: the program (function or section) to compile")
    s.add_argument("--prog-type", default=None, help="default: the ELF section's, else mem")
    s.add_argument("--format", **fmt)
    s.set_defaults(func=cmd_jit)

    s = sub.add_parser("packs", help="load sample programs and show the pack allocator")
    s.add_argument("--programs", type=PROGRAMS, default=20, help="sample programs to load")
    s.add_argument("--unload-every", type=PROGRAMS, default=0, metavar="K",
                   help="then unload every K-th one (to show free holes)")
    s.add_argument("--seed", type=SEED, default=1)
    s.add_argument("--backend", choices=("procmem", "memfd", "mprotect"),
                   help="force the execmem write path")
    s.add_argument("--svg", metavar="FILE", help="also draw the packs as an SVG picture")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.add_argument("--limit", type=ROWS, default=40, help="program rows per pack in the table")
    s.set_defaults(func=cmd_packs)

    s = sub.add_parser("bench", help="run the benchmark suite and print figures, goals, ratios")
    s.add_argument("--quick", action="store_true", help="a short run (fewer samples)")
    s.add_argument("--only", action="append", metavar="SECTION",
                   help="compile, execmem, jit, interp, arena, maps, pkt_helpers, switch, "
                        "verifier, tiers or bigprog (repeatable)")
    s.add_argument("--json", metavar="FILE", help="also write every figure and raw result")
    s.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    s.set_defaults(func=cmd_bench)

    from .fuzz import TARGETS
    s = sub.add_parser("fuzz", help="fuzz a part of pybpf against its invariants")
    s.add_argument("target", choices=TARGETS)
    s.add_argument("--seconds", type=_float_in(0.1, 86_400.0), default=10.0)
    s.add_argument("--seed", type=SEED, default=0)
    s.add_argument("--save", metavar="DIR", help="save each failing input here as JSON "
                                                 "(tests/fuzz/corpus replays them)")
    s.add_argument("--isolate", action="store_true",
                   help="a fresh worker process for every case (slower; the default reuses one "
                        "and replays a failing case alone)")
    s.set_defaults(func=cmd_fuzz)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AsmError as e:
        print(str(e), file=sys.stderr)
        return EXIT_USAGE
    except VerifierError as e:
        print(f"pybpf: verifier: {e}", file=sys.stderr)
        return EXIT_FAIL
    except BPFError as e:
        print(f"pybpf: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug in pybpf, not bad input: say so without a traceback
        if os.environ.get("PYBPF_DEBUG"):
            traceback.print_exc()
        print(f"pybpf: internal error: {type(e).__name__}: {e} (set PYBPF_DEBUG=1 for details)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
