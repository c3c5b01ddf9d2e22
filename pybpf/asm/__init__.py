"""The assembler for both dialects (mnemonic and LLVM pseudo-C), grammar in grammar.lark.

>>> assemble("r0 = 42\\nexit").to_bytes().hex()
'b70000002a0000009500000000000000'
"""
from .assembler import SYNTAXES, assemble

__all__ = ["assemble", "SYNTAXES"]
