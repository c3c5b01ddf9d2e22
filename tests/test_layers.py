"""The layers import one way: the runtime and the JIT never import each other, and the facade
above both (pybpf.vm, pybpf.loaded) pulls the JIT in only when a program is JIT-compiled.

Each check imports every module of a package in a fresh interpreter (a module imported earlier by
pytest would hide an import) and lists which pybpf packages and llvmlite got loaded.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"pybpf.runtime": "runtime", "pybpf.jit": "jit", "pybpf.verifier": "verifier"}

_PROBE = r"""
import importlib, json, pathlib, sys
for name in sys.argv[2:]:
    importlib.import_module(name)
prefixes = ("pybpf.runtime", "pybpf.jit", "pybpf.verifier", "pybpf.vm", "pybpf.loaded", "llvmlite")
print(json.dumps(sorted({p for m in sys.modules for p in prefixes
                         if m == p or m.startswith(p + ".")})))
"""


def modules_of(package: str) -> list[str]:
    """Every module of ``package`` (its files under the folder it is mapped from)."""
    folder = ROOT / PACKAGES[package]
    names = []
    for f in sorted(folder.rglob("*.py")):
        parts = [p for p in f.relative_to(folder).with_suffix("").parts if p != "__init__"]
        names.append(".".join([package, *parts]))
    return names


def loaded_after(*modules: str) -> set[str]:
    """The pybpf packages (and llvmlite) a fresh interpreter has loaded after importing ``modules``."""
    out = subprocess.run([sys.executable, "-c", _PROBE, "-", *modules], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_every_package_module_is_listed():
    # guards the probe itself: the folders hold the modules the checks import
    assert "pybpf.runtime.maps.hash" in modules_of("pybpf.runtime")
    assert "pybpf.jit.lower" in modules_of("pybpf.jit")


def test_runtime_imports_neither_the_jit_nor_llvmlite():
    got = loaded_after(*modules_of("pybpf.runtime"))
    assert "pybpf.runtime" in got
    assert not got & {"pybpf.jit", "llvmlite", "pybpf.vm", "pybpf.loaded"}, got


def test_jit_does_not_import_the_runtime():
    got = loaded_after(*modules_of("pybpf.jit"))
    assert {"pybpf.jit", "llvmlite"} <= got
    assert not got & {"pybpf.runtime", "pybpf.vm", "pybpf.loaded"}, got


def test_verifier_imports_neither_engine():
    got = loaded_after(*modules_of("pybpf.verifier"))
    assert not got & {"pybpf.runtime", "pybpf.jit", "llvmlite"}, got


@pytest.mark.parametrize("facade", ["pybpf.vm", "pybpf.loaded"])
def test_the_facade_loads_the_jit_only_on_demand(facade):
    got = loaded_after(facade)
    assert {"pybpf.runtime", facade} <= got
    assert not got & {"pybpf.jit", "llvmlite"}, got
