"""Run a small assembled program that calls kfuncs, in pybpf (either engine) and in the running
kernel (BPF_PROG_TEST_RUN), on the same context bytes; the kfunc tests compare the two.

Programs are pybpf LLVM-syntax assembly calling kfuncs by name (``call bpf_iter_num_new``);
:func:`kernel_run` swaps pybpf's kfunc ids for the kernel's BTF ids (tests/kernel_verifier.py)
and loads the program as ``prog_type`` (syscall programs sleepable, as 6.18 wants them). A
syscall program's context is a plain byte buffer the program reads and rewrites: both sides
return ``(r0, context after the run)``.
"""
from __future__ import annotations

import os

import pybpf

import kernel_bpf
import kernel_verifier


def assemble(text: str):
    from pybpf.helper_names import HELPER_IDS
    import re
    text = re.sub(r"call bpf_(\w+)",
                  lambda m: f"call {HELPER_IDS[m[1]]}" if m[1] in HELPER_IDS else m[0], text)
    return pybpf.assemble(text, syntax="llvm")


def pybpf_run(text: str, ctx: bytes, engine: str, prog_type: str = "syscall",
              data: bytes | None = None) -> tuple[int, bytes]:
    vm = pybpf.VM()
    lp = vm.load(assemble(text), prog_type=prog_type, engine=engine)
    if data is not None:
        r0 = lp.run(data=data)
        return r0 & 0xFFFFFFFF, b""
    buf = bytearray(ctx)
    r0 = lp.run(ctx=buf)
    return r0 & 0xFFFFFFFF, bytes(lp.last_ctx if isinstance(lp.last_ctx, (bytes, bytearray))
                                  else buf)


def kernel_run(text: str, ctx: bytes, prog_type: str = "syscall",
               data: bytes | None = None) -> tuple[int, bytes]:
    prog = assemble(text)
    # tests/kernel_verifier.py's load: kfunc BTF ids, func_info for callbacks, sleepable syscall
    fd = kernel_verifier._load(prog, prog_type, [], 0, None)
    try:
        if data is not None:
            r0, _, _ = kernel_bpf.test_run(fd, data=data, data_out_size=len(data) + 256)
            return r0, b""
        r0, _, after = kernel_bpf.test_run(fd, ctx=ctx)
        return r0, after
    finally:
        os.close(fd)
