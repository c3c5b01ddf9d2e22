"""BTF whose types refer back to themselves, as the elf fuzzer found it (a FUNC_PROTO whose
parameter points at the FUNC_PROTO: ``BTF.type_str`` recursed until RecursionError escaped the
loader). pybpf refuses what the kernel's btf_resolve() refuses ('Loop detected', a walk deeper
than MAX_RESOLVE_DEPTH) and terminates on what it accepts; each blob's verdict is compared with
the running kernel's BPF_BTF_LOAD."""
from __future__ import annotations

import struct

import pytest

from pybpf.elf.btf import BTF, BTFError

INT, PTR, ARRAY, STRUCT, TYPEDEF, CONST, FUNC_PROTO = 1, 2, 3, 4, 8, 10, 13
STRINGS = b"\0int\0S\0p\0T\0"
NAME = {"int": 1, "S": 5, "p": 7, "T": 9}


def _t(kind, size_type, name=0, vlen=0, extra=b""):
    return struct.pack("<III", name, kind << 24 | vlen, size_type) + extra


def _int(bits=32):
    return _t(INT, bits // 8, NAME["int"], extra=struct.pack("<I", bits))


def blob(*types: bytes) -> bytes:
    body = b"".join(types)
    return struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(STRINGS)) \
        + body + STRINGS


def _member(name, tid, bit_off=0):
    return struct.pack("<III", NAME[name], tid, bit_off)


# name -> (blob, the message pybpf gives or None when accepted); type ids start at 1
CASES = {
    # [1] int, [2] ptr -> [3], [3] func_proto int (p: [2]): the fuzzer's case, accepted
    "func_proto_param_points_at_itself": (blob(
        _int(), _t(PTR, 3), _t(FUNC_PROTO, 1, vlen=1, extra=struct.pack("<II", NAME["p"], 2))),
        None),
    # struct S { const struct S *p; }: a pointer is a sink, a list node is fine
    "struct_points_at_itself_through_const": (blob(
        _int(), _t(STRUCT, 8, NAME["S"], vlen=1, extra=_member("p", 3)), _t(PTR, 4),
        _t(CONST, 2)), None),
    # [2] ptr -> [3] array of [2]: an array is a sink for a pointer, a pointer for an array
    "pointer_to_array_of_itself": (blob(
        _int(), _t(PTR, 3), _t(ARRAY, 0, extra=struct.pack("<III", 2, 1, 4))), None),
    "pointer_to_itself": (blob(_int(), _t(PTR, 2)), "Loop detected"),
    "pointer_to_const_pointer_to_it": (blob(_int(), _t(PTR, 3), _t(CONST, 2)), "Loop detected"),
    "typedef_of_itself": (blob(_int(), _t(TYPEDEF, 2, NAME["T"])), "Loop detected"),
    "array_of_itself": (blob(_int(), _t(ARRAY, 0, extra=struct.pack("<III", 2, 1, 4))),
                        "Loop detected"),
    "struct_holding_itself": (blob(
        _int(), _t(STRUCT, 8, NAME["S"], vlen=1, extra=_member("p", 2))), "Loop detected"),
    # [2] const -> [3] const -> ... -> int: the walk from [2] is as deep as the chain; the
    # kernel walks 32 (MAX_RESOLVE_DEPTH) and refuses the 33rd
    "modifier_chain_33_deep": (blob(_int(), *(_t(CONST, i + 1) for i in range(2, 34)),
                                    _t(CONST, 1)), "Exceeded max resolving depth"),
    "modifier_chain_32_deep": (blob(_int(), *(_t(CONST, i + 1) for i in range(2, 33)),
                                    _t(CONST, 1)), None),
    # the same 40 types in the other order: each walk is one step (the kernel's order)
    "modifier_chain_40_resolved_bottom_up": (blob(_int(), *(_t(CONST, i) for i in range(1, 41))),
                                             None),
}


@pytest.mark.parametrize("name", CASES)
def test_pybpf_verdict(name):
    raw, refusal = CASES[name]
    if refusal is not None:
        with pytest.raises(BTFError, match=refusal):
            BTF.parse(raw)
        return
    btf = BTF.parse(raw)
    for tid in range(1, len(btf)):          # every spelling ends
        assert isinstance(btf.type_str(tid), str)


def test_the_fuzzers_case_spells_its_loop():
    btf = BTF.parse(CASES["func_proto_param_points_at_itself"][0])
    assert btf.type_str(2) == "int (*)([2]) *"


@pytest.mark.kernel("btf")
@pytest.mark.parametrize("name", CASES)
def test_kernel_agrees(name):
    import os
    import kernel_bpf
    raw, refusal = CASES[name]
    try:
        fd = kernel_bpf.load_raw_btf(raw)
    except kernel_bpf.KernelError as e:
        assert refusal is not None, f"the kernel refuses it: {e}"
        assert refusal in str(e), str(e)
        return
    os.close(fd)
    assert refusal is None, "the kernel accepts it"
