"""BPF_MAP_TYPE_CGROUP_STORAGE and PERCPU_CGROUP_STORAGE as BPF_PROG_TEST_RUN sees them
(kernel/bpf/local_storage.c, net/bpf/test_run.c).

In the kernel a storage exists per (cgroup, attach type) once a program using the map is
attached; ``bpf_get_local_storage(map, 0)`` returns the running program's. BPF_PROG_TEST_RUN
attaches nothing: it allocates a fresh, zeroed storage for the test run (kept across its
``repeat`` runs) and frees it afterwards, so the map itself never holds an element. pybpf runs
are test runs: :meth:`CgroupStorage.map_local_storage` gives the map's one storage, zeroed when
a new run starts (runs are told apart by their region table, one per run and shared by a
test_run's repetitions); lookups and ``get_next_key`` from user space find nothing (ENOENT),
updates are ENOENT too, as for a map with no attached cgroup.

Attributes as the kernel checks them: key_size 16 (``struct bpf_cgroup_storage_key``) or 8
(a cgroup inode id), max_entries 0, value_size from 1 to a page (percpu: PCPU_MIN_UNIT_SIZE),
flags only BPF_F_NUMA_NODE and the access flags. Concurrent runs of one map share its storage.
"""
from __future__ import annotations

import errno
import weakref

from pybpf.uapi import BPF_F_ACCESS_MASK, BPF_F_NUMA_NODE

from .base import HEADER_SIZE, PAGE_SIZE, PCPU_MIN_UNIT_SIZE, Map, Memory, check, round_up
from ..helpers import ACTIVE_REGIONS

LOCAL_STORAGE_CREATE_FLAG_MASK = BPF_F_NUMA_NODE | BPF_F_ACCESS_MASK


class CgroupStorage(Map):
    """The shared cgroup storage: one value per test run."""

    type = "cgroup_storage"

    def _setup(self) -> None:
        ks, vs = self.key_size, self.value_size
        limit = PCPU_MIN_UNIT_SIZE if self.percpu else PAGE_SIZE
        check(ks in (16, 8), errno.EINVAL,
              "key must be struct bpf_cgroup_storage_key (16 bytes) or a u64")
        check(vs > 0, errno.EINVAL, "value_size must be > 0")
        check(vs <= limit, errno.E2BIG, f"value_size above {limit}")
        check(not self.flags & ~LOCAL_STORAGE_CREATE_FLAG_MASK, errno.EINVAL, "unknown flags")
        check(self.max_entries == 0, errno.EINVAL, "max_entries is not used and must be 0")
        self._mem = Memory(HEADER_SIZE + round_up(vs, 8))
        self._place_header(self._mem)
        self.data_address = self._mem.address + HEADER_SIZE
        self.header.data = self.data_address
        self._run = None

    def map_local_storage(self) -> int:
        """bpf_get_local_storage: the storage of the current run, zeroed when a run starts."""
        table = ACTIVE_REGIONS.get()
        if table is None or self._run is None or self._run() is not table:
            self._mem.view[HEADER_SIZE:HEADER_SIZE + self.value_size] = bytes(self.value_size)
            self._run = weakref.ref(table) if table is not None else None
        return self.data_address

    def regions(self) -> list[tuple[int, int, bool]]:
        return [(self.data_address, self.value_size, True)]

    def _raw_keys(self) -> list[bytes]:
        return []

    def _update(self, key: bytes, value: bytes, flags: int, onallcpus: bool) -> int:
        return -errno.ENOENT            # no cgroup is attached: no storage to update


class PercpuCgroupStorage(CgroupStorage):
    """The per-CPU variant: pybpf runs on one CPU, so BPF sees one value, as the shared one."""

    type = "percpu_cgroup_storage"
    percpu = True
