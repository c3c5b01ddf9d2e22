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
    def error(self, message):  # argparse exits 2 on usage errors; keep that, shorten the text
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"pybpf: error: {message}\n")


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


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
    from .runtime.vm import VM
    prog = load_program(args.input, args.format)
    vm = VM()
    try:
        log = vm.verify(prog, prog_type=args.prog_type)
    except VerifierError as e:
        if args.verbose and e.log:
            sys.stdout.write(e.log if e.log.endswith("\n") else e.log + "\n")
        print(f"{args.input}: rejected: {e}", file=sys.stderr)
        return EXIT_FAIL
    if args.verbose and log:
        sys.stdout.write(log if log.endswith("\n") else log + "\n")
    print(f"{args.input}: accepted")
    return EXIT_OK


def cmd_run(args) -> int:
    from .inputs import load_program
    from .runtime.vm import VM
    prog = load_program(args.input, args.format)
    mem = _mem_arg(args)
    vm = VM()
    kwargs = {}
    if args.insn_limit is not None:
        kwargs["insn_limit"] = args.insn_limit
    lp = vm.load(prog, prog_type="mem", engine=args.engine, verify=not args.no_verify, **kwargs)
    trace = None
    if args.trace:
        def trace(line):
            print(line, file=sys.stderr)
    try:
        r0 = lp.run(mem=mem, trace=trace) if trace else lp.run(mem=mem)
    finally:
        for line in vm.trace_output() if hasattr(vm, "trace_output") else ():
            print(line, file=sys.stderr)
        lp.close()
    print(f"0x{r0:x}")
    return EXIT_OK


def cmd_test(args) -> int:
    from .testrunner import FAIL, SKIP, collect, run_file, summary_line
    files = collect(args.paths)
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        print(f"pybpf: no such file: {missing[0]}", file=sys.stderr)
        return EXIT_USAGE
    outcomes = []
    for f in files:
        o = run_file(f, engine=args.engine, any_error=args.any_error, insn_limit=args.insn_limit)
        outcomes.append(o)
        if o.status == FAIL:
            print(f"FAIL {o.path}: {o.message}")
        elif o.status == SKIP and (args.verbose or "unknown section" in o.message):
            print(f"SKIP {o.path}: {o.message}")
        elif args.verbose:
            print(f"PASS {o.path}")
    print(summary_line(outcomes))
    return EXIT_FAIL if any(o.status == FAIL for o in outcomes) else EXIT_OK


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
    s.add_argument("--prog-type", default="mem")
    s.add_argument("--mem-size", type=_int, default=None)
    s.add_argument("-v", "--verbose", action="store_true", help="print the full log")
    s.add_argument("--format", **fmt)
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("run", help="run a program once and print r0")
    s.add_argument("input")
    s.add_argument("--engine", choices=("interp", "jit"), default="interp")
    s.add_argument("--mem", help="memory as hex bytes")
    s.add_argument("--mem-file", help="memory from a file")
    s.add_argument("--no-verify", action="store_true")
    s.add_argument("--insn-limit", type=_int, default=None)
    s.add_argument("--trace", action="store_true", help="print each executed instruction")
    s.add_argument("--format", **fmt)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("test", help="run .data test files")
    s.add_argument("paths", nargs="+")
    s.add_argument("--engine", choices=("interp", "jit", "both"), default="interp")
    s.add_argument("--any-error", action="store_true",
                   help="an expected-error file passes on any refusal at the implied stage")
    s.add_argument("--insn-limit", type=_int, default=None)
    s.add_argument("-v", "--verbose", action="store_true")
    s.set_defaults(func=cmd_test)
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
