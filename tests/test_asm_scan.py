"""The assembler's fast path against its reference, and its memory on a big listing.

The scanner (pybpf/asm/lines.py) must read every line exactly as the Lark grammar does: the same
labels and tokens at the same columns, and a refusal exactly where Lark raises. The assembler
with the scanner and its statement cache (``lines.FAST``) must give the same bytes, symbols,
source lines and errors as with every chunk through Lark and nothing cached.
"""
import glob
import os
import string
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lark.exceptions import UnexpectedInput

from pybpf.asm import assemble, lines
from pybpf.datafile import parse_data_file
from pybpf.disasm import STYLES, disassemble
from pybpf.errors import AsmError

from support import conformance_files
from test_asm import _ERROR_CASES
from test_asm_fuzz import TOKENS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def lark_line(text: str):
    """(labels, statement tokens) as (type, value, column) of one cleaned line through the
    grammar, or None when it raises."""
    try:
        tree = lines.parser().parse(text + "\n")
    except UnexpectedInput:
        return None
    labels, stmt = [], []
    for node in tree.children:
        toks = [(t.type, str(t), t.column) for t in node.children]
        if node.data == "label":
            labels += toks
        else:
            stmt = toks
    return labels, stmt


def scan_line(text: str):
    """The same through the fast path: the label splitter, then the scanner on the rest."""
    labels, off = lines.split_labels(text)
    got = lines.tokenize(text[off:], 1, off)
    if got is None:
        return None
    inner, stmt = got
    return ([("REG" if lab.reg else "NAME", lab.name, lab.col) for lab in labels]
            + [(t.type, str(t), t.column) for t in inner],
            [(t.type, str(t), t.column) for t in stmt])


def assembled(text: str, syntax: str = "auto"):
    """Everything ``assemble`` gives for ``text``: the program's parts or the error's text."""
    try:
        p = assemble(text, syntax=syntax, filename="t.s")
    except AsmError as e:
        return str(e)
    return p.to_bytes(), p.functions, p.labels, p.lines, p.kfuncs, [m.name for m in p.maps]


def both_paths(text: str, syntax: str = "auto"):
    fast = assembled(text, syntax)
    old = lines.FAST
    lines.FAST = False
    try:
        reference = assembled(text, syntax)
    finally:
        lines.FAST = old
    return fast, reference


def corpus_texts(styles=(*STYLES, "objdump")) -> list[str]:
    """Listings the assembler must read: the conformance suite, the samples, and the suite's
    programs disassembled in ``styles`` ("objdump": llvm style with objdump's preamble and no
    symbols)."""
    texts = [parse_data_file(p).asm for p in conformance_files()]
    texts += [open(p).read() for p in sorted(glob.glob(os.path.join(ROOT, "samples", "asm", "*.s")))]
    listed = []
    for text in texts:
        try:
            prog = assemble(text)
        except AsmError:
            continue
        listed += [disassemble(prog, syntax=s) for s in styles if s != "objdump"]
        if "objdump" in styles:
            listed.append(disassemble(prog, syntax="llvm", filename="p.o", symbols=False))
    return texts + listed + [t for t, *_ in _ERROR_CASES]


@pytest.fixture
def corpus(conformance_dir):
    return corpus_texts()


def test_scanner_reads_every_corpus_line_as_the_grammar(corpus):
    seen = set()
    for text in corpus:
        for line in text.split("\n"):
            line = lines._clean(line)
            if line not in seen:
                seen.add(line)
                assert scan_line(line) == lark_line(line), repr(line)
    assert len(seen) > 2000


# Characters that make tokens, break them, or are refused (Lark's "unexpected character").
ODD = " \t\f\r\v:%<>#/;,[]()+-*=&|^!sSrRwW0123456789xXabcf_.éٹ٣\x00\x0b\\\"'`?@${}~"
odd_lines = st.text(alphabet=ODD, max_size=30)
soup_lines = st.lists(st.sampled_from([t for t in TOKENS if "\n" not in t and len(t) < 100]
                                      + [":", " :", "<x>", "% r1", "%r1:", "r1:", "5:", "a:b:"]),
                      max_size=10).map(lambda ts: "".join(t + " " * (i % 2) for i, t in enumerate(ts)))


@settings(max_examples=300, **SETTINGS)
@given(st.one_of(odd_lines, soup_lines, st.text(alphabet=string.printable, max_size=40)))
def test_scanner_reads_random_lines_as_the_grammar(line):
    line = line.replace("\n", " ")
    assert scan_line(line) == lark_line(line)


# PYBPF_ASM_DIFF=1: every style of listing in every dialect, with the default cache and chunks
# as well (about 10 times the default run's work).
FULL = os.environ.get("PYBPF_ASM_DIFF") == "1"


def test_fast_path_assembles_the_corpus_as_the_reference(conformance_dir, monkeypatch):
    # a tiny cache (emptied every few statements) and tiny chunks must change nothing either
    texts = corpus_texts() if FULL else corpus_texts(styles=("objdump",))
    configs = [(3, 5)] + ([(lines.CACHE_ENTRIES, lines.CHUNK_LINES)] if FULL else [])
    for size, chunk in configs:
        monkeypatch.setattr(lines, "CACHE_ENTRIES", size)
        monkeypatch.setattr(lines, "CHUNK_LINES", chunk)
        for text in texts:
            for syntax in ("auto", "ubpf", "llvm") if FULL else ("auto",):
                fast, reference = both_paths(text, syntax)
                assert fast == reference, (syntax, text)


programs = st.lists(st.sampled_from(
    ["mov %r0, 1", "r0 = 1", "exit", "ja +1", "goto -1", "L1:", "L2: r0 = 2", "call local L1",
     "lddw %r1, 5", "r1 = 5 ll", "jeq %r0, 1, L1", "if r0 > 0x1ffffffff goto L2", "goto L3",
     "call L1", "call bpf_obj_new_impl", "jne %r0, %r1, exit", "r0 = 1 ?", "L1:", "r11 = 1",
     ".map m type=hash key=4 value=8 max_entries=1", "r1 = map[m] ll", "lddw %r1, map[m]",
     "r0 = *(u32 *)(r10 - 8)", "r0 = *(u32 *)(r10 - 99999)", "w0 = w1", "exit:", "a <x>: r0 = 0",
     "call local +0", "call kfunc(5)", "*(u64 *)(r10 - 8) = r1", "lock *(u64 *)(r1 + 0) += r2"]),
    max_size=14).map("\n".join)


@settings(max_examples=200, **SETTINGS)
@given(st.one_of(programs, st.lists(st.sampled_from(TOKENS), max_size=24).map(" ".join)),
       st.sampled_from(["auto", "ubpf", "llvm"]))
def test_fast_path_assembles_random_text_as_the_reference(text, syntax):
    fast, reference = both_paths(text, syntax)
    assert fast == reference


def test_memory_per_statement_is_bounded():
    # 20,000 labelled loads: the listing is read a chunk at a time and each distinct statement
    # is analysed once, so what is held is the Program and the labels. Measured (tracemalloc
    # peak): 431 bytes per line; 4,376 when every statement's tokens and forms were kept.
    n = 20_000
    text = "".join(f"l{i}: r0 = *(u32 *)(r10 - 8)\n" for i in range(n)) + "exit\n"
    assemble("exit")        # the ISA table's patterns are built once per process, not here
    tracemalloc.start()
    try:
        prog = assemble(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(prog) == n + 1
    assert peak / n < 1500, f"{peak / n:.0f} bytes per statement"
