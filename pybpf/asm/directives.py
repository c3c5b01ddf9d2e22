"""Assembler directives: statements that start with ``.name``.

``.map NAME type=T key=K value=V max_entries=N [flags=F] [map_extra=X] [lock=OFF]`` declares a
map that ``map[NAME]`` / ``map_value[NAME] + K`` refer to by its position among the declarations
(ld_imm64 src 5/6); ``lock=OFF`` says its value holds a ``struct bpf_spin_lock`` at OFF (what an
object's value BTF tells the loader). It is the only directive; any other is an error.
"""
from __future__ import annotations

from lark import Token

from ..program import MapDecl
from .templates import number

# attribute spelling -> MapDecl field (the disassembler writes key=/value=)
_MAP_ATTRS = {"type": "type", "key": "key_size", "key_size": "key_size", "value": "value_size",
              "value_size": "value_size", "max_entries": "max_entries", "flags": "flags",
              "map_extra": "map_extra", "lock": "spin_lock_off"}


def run(asm, toks: list[Token]) -> None:
    handler = _DIRECTIVES.get(str(toks[0]))
    if handler is None:
        raise asm.error(f"unknown directive '{toks[0]}'", toks[0])
    handler(asm, toks)


def _map(asm, toks: list[Token]) -> None:
    if len(toks) < 2 or toks[1].type != "NAME":
        at = toks[1] if len(toks) > 1 else None
        raise (asm.error("expected a map name after .map", at) if at is not None
               else asm.end_error("expected a map name after .map", toks))
    name = str(toks[1])
    if any(m.name == name for m in asm.maps):
        raise asm.error(f"duplicate map '{name}'", toks[1])
    attrs: dict[str, object] = {}
    i = 2
    while i < len(toks):
        key = toks[i]
        if key.type != "NAME" or not _is_pair(toks, i):
            raise asm.error("expected key=value in .map", key)
        field = _MAP_ATTRS.get(str(key))
        if field is None:
            raise asm.error(f"unknown .map attribute '{key}'", key)
        if field in attrs:
            raise asm.error(f"duplicate .map attribute '{key}'", key)
        value = toks[i + 2]
        if field == "type":
            attrs[field] = str(value)
        elif value.type == "NUMBER":
            attrs[field] = number(value)
            if attrs[field] >> (64 if field == "map_extra" else 32):
                raise asm.error(f"value out of range for .map attribute '{key}'", value)
        else:
            raise asm.error(f"expected a number for .map attribute '{key}'", value)
        i += 3
    if "type" not in attrs:
        raise asm.error(f"map '{name}' has no type= attribute", toks[0])
    asm.maps.append(MapDecl(name=name, **attrs))


def _is_pair(toks: list[Token], i: int) -> bool:
    return (i + 2 < len(toks) and toks[i + 1].type == "OP" and toks[i + 1] == "="
            and toks[i + 2].type in ("NAME", "NUMBER"))


_DIRECTIVES = {".map": _map}
