"""The assembler for both dialects (mnemonic and LLVM pseudo-C), grammar in grammar.lark."""
