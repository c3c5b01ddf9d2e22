"""Grace periods on hash elements (runtime/grace.py, runtime/maps/hash.py; issue 12).

A hash element freed by a delete or replaced by an update is not reused while a run that
started before the free is still going: such a run may hold the element's address (JIT code
looks elements up inline, without the GIL), and it must go on seeing that element, never another
key's data written over it. Before, freed elements were reused at once, oldest first.
"""
from __future__ import annotations

import ctypes
import errno
import threading

from pybpf.runtime import grace
from pybpf.runtime.maps import create_map


def _key(i: int) -> bytes:
    return i.to_bytes(4, "little")


def _in_run_thread():
    """A thread that sits inside a read section (a run) until released."""
    entered, release = threading.Event(), threading.Event()

    def body():
        with grace.reading():
            entered.set()
            release.wait(30)

    t = threading.Thread(target=body)
    t.start()
    assert entered.wait(10)
    return t, release


def test_freed_element_is_not_reused_under_an_older_run():
    m = create_map("hash", 4, 8, 4)
    m.sys_update(_key(0), b"original")
    held = m.map_lookup_elem(_key(0))         # what a run would keep in a register
    t, release = _in_run_thread()
    done: list[int] = []

    def churn():                              # far more updates than there are elements
        for i in range(60):
            m.sys_update(_key(1 + i % 3), i.to_bytes(8, "little"))
            m.sys_delete(_key(1 + i % 3))
            done.append(i)

    m.sys_delete(_key(0))
    c = threading.Thread(target=churn)
    c.start()
    c.join(1.0)                               # it cannot finish while the run goes on
    try:
        # the churn ran out of elements out of their grace period and waits for the run
        assert len(done) < 60, "every update went through while an older run was going"
        assert ctypes.string_at(held, 8) == b"original", "the run's element was reused"
    finally:
        release.set()
        t.join()
    c.join(30)
    assert len(done) == 60                   # once the run ends the waiting update goes on
    assert sorted(m._raw_keys()) == []


def test_elements_are_reused_at_once_when_no_other_run_is_going():
    m = create_map("hash", 4, 8, 2)
    for i in range(1000):                    # single-threaded: no waiting, no refusal
        m.sys_update(_key(i % 2), i.to_bytes(8, "little"))
    assert m.sys_lookup(_key(1)) == (999).to_bytes(8, "little")


def test_an_update_inside_a_run_is_refused_rather_than_waiting():
    """A run cannot wait for another run (they might wait for each other): when every spare
    element is in its grace period its update fails with -ENOMEM."""
    m = create_map("hash", 4, 8, 2)
    m.sys_update(_key(0), bytes(8))
    t, release = _in_run_thread()             # an older run holds back every freed element
    errors = []
    try:
        with grace.reading():
            for i in range(m.n_elems + 2):
                errors.append(m.map_update_elem(_key(0), i.to_bytes(8, "little"), 0))
    finally:
        release.set()
        t.join()
    assert errors[0] == 0 and -errno.ENOMEM in errors, errors
    first = errors.index(-errno.ENOMEM)
    assert first == m.n_elems - 1, errors    # every other element was used once, then none
    assert m.map_update_elem(_key(0), b"after!!!", 0) == 0      # the older run ended
    assert m.sys_lookup(_key(0)) == b"after!!!"
