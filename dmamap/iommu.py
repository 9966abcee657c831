"""An IOMMU (an Arm SMMU with stage-1 translation): per-device domains whose
page tables live in emulated RAM in the AArch64 VMSAv8-64 format (4 KiB granule,
39-bit input addresses, 3 levels), an IOVA allocator, an IOTLB invalidated on
unmap, and faults recorded against the device.

A domain's root (``Domain.root``, the context descriptor's TTB0) decodes with the
shared walker: ``dmamap.testing.pagetable.walk(machine, domain.root, iova)``.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dmamap._check import PAGE_SHIFT, PAGE_SIZE, hex_repr
from dmamap.errors import IommuFaultError, OutOfMemoryError
from dmamap.genalloc import GenPool
from dmamap.physmem import Page, PhysicalMemory

if TYPE_CHECKING:
    from dmamap.device import Device

__all__ = ["Iommu", "Domain", "IommuFault", "IOVA_BASE", "IOVA_SIZE", "iommu_of"]

#: IOVA space handed out (the first 1 MiB is left unmapped so a NULL-ish bus address faults).
IOVA_BASE = 1 << 20
IOVA_SIZE = (1 << 32) - IOVA_BASE
_VALID_TABLE = 0b11
_PAGE = 0b11
_AF = 1 << 10
_SH_INNER = 3 << 8
_AP_RO = 1 << 7
_ATTR_NORMAL = 0 << 2
_ADDR = ((1 << 48) - 1) & ~0xFFF


@dataclass(frozen=True)
class IommuFault:
    """One translation or permission fault: device, IOVA, access, reason."""

    device: str
    iova: int
    is_write: bool
    reason: str

    __repr__ = hex_repr("iova")


@dataclass(eq=False)
class Domain:
    """One device's translation context: a root table in RAM and its IOTLB."""

    machine: PhysicalMemory
    root: int
    tables: list[Page] = field(default_factory=list)
    iotlb: dict[int, tuple[int, bool]] = field(default_factory=dict)   # iova page -> (pa page, writable)
    iova: GenPool = field(default_factory=lambda: GenPool("iova", IOVA_BASE, IOVA_SIZE, granule=PAGE_SIZE))
    lock: threading.RLock = field(default_factory=threading.RLock)

    def _entry(self, table: int, index: int) -> int:
        return int.from_bytes(self.machine.phys_read(table + 8 * index, 8), "little")

    def _set(self, table: int, index: int, value: int) -> None:
        self.machine.phys_write(table + 8 * index, value.to_bytes(8, "little"))

    def _table_for(self, iova: int, create: bool) -> int | None:
        table = self.root
        for level in (2, 1):
            idx = (iova >> (PAGE_SHIFT + 9 * level)) & 511
            e = self._entry(table, idx)
            if not e & 1:
                if not create:
                    return None
                page = self.machine.alloc_pages(1)
                self.tables.append(page)
                self._set(table, idx, page.phys_addr | _VALID_TABLE)
                e = page.phys_addr | _VALID_TABLE
            table = e & _ADDR
        return table

    def map(self, iova: int, pa: int, npages: int, writable: bool) -> None:
        """Map ``npages`` pages at ``iova`` to ``pa`` (all-or-nothing)."""
        with self.lock:
            done = 0
            try:
                for i in range(npages):
                    va = iova + (i << PAGE_SHIFT)
                    table = self._table_for(va, True)
                    assert table is not None
                    leaf = ((pa + (i << PAGE_SHIFT)) & _ADDR) | _PAGE | _AF | _SH_INNER | _ATTR_NORMAL
                    if not writable:
                        leaf |= _AP_RO
                    self._set(table, (va >> PAGE_SHIFT) & 511, leaf)
                    done += 1
            except BaseException:
                self.unmap(iova, done)
                raise

    def unmap(self, iova: int, npages: int) -> None:
        """Clear the leaves and invalidate the IOTLB for them (TLBI by IOVA)."""
        with self.lock:
            for i in range(npages):
                va = iova + (i << PAGE_SHIFT)
                table = self._table_for(va, False)
                if table is not None:
                    self._set(table, (va >> PAGE_SHIFT) & 511, 0)
                self.iotlb.pop(va >> PAGE_SHIFT, None)

    def translate(self, iova: int) -> tuple[int, bool] | None:
        """(pa, writable) of ``iova`` through the IOTLB, walking the tables on a miss."""
        vpn = iova >> PAGE_SHIFT
        hit = self.iotlb.get(vpn)
        if hit is None:
            if iova >> 39:
                return None
            table = self._table_for(iova, False)
            if table is None:
                return None
            e = self._entry(table, vpn & 511)
            if e & 3 != _PAGE:
                return None
            hit = (e & _ADDR, not e & _AP_RO)
            self.iotlb[vpn] = hit
        return hit[0] | (iova & (PAGE_SIZE - 1)), hit[1]

    def free(self) -> None:
        for p in self.tables:
            self.machine.free_pages(p, 1)
        self.tables.clear()
        self.iotlb.clear()


class Iommu:
    """The machine's IOMMU: one domain per device, faults recorded in :attr:`faults`."""

    def __init__(self, machine: PhysicalMemory) -> None:
        self.machine = machine
        self.domains: dict[int, Domain] = {}
        self.faults: list[IommuFault] = []
        self.lock = threading.Lock()
        self.iotlb_invalidations = 0

    def domain(self, dev: Device) -> Domain:
        with self.lock:
            dom = self.domains.get(dev.id)
            if dom is None:
                root = self.machine.alloc_pages(1)
                dom = Domain(self.machine, root.phys_addr, [root])
                self.domains[dev.id] = dom
            return dom

    def map_runs(self, dev: Device, runs: list[tuple[int, int]], writable: bool) -> int:
        """Map physical (pa, length) runs back to back into one IOVA range; the
        IOVA of the first byte (with the first run's offset in its page)."""
        dom = self.domain(dev)
        pages = [(pa & ~(PAGE_SIZE - 1), (pa + n - 1 - (pa & ~(PAGE_SIZE - 1))) // PAGE_SIZE + 1)
                 for pa, n in runs]
        total = sum(n for _, n in pages)
        try:
            with dom.lock:
                base = dom.iova.alloc(total << PAGE_SHIFT)
        except OutOfMemoryError:
            raise OutOfMemoryError(f"IOVA space of device {dev.name!r} exhausted ({total} pages)") from None
        off = 0
        try:
            for pa, n in pages:
                dom.map(base + (off << PAGE_SHIFT), pa, n, writable)
                off += n
        except BaseException:
            dom.unmap(base, off)
            with dom.lock:
                dom.iova.free(base, total << PAGE_SHIFT)
            raise
        return base + (runs[0][0] & (PAGE_SIZE - 1))

    def unmap_range(self, dev: Device, iova: int, npages: int) -> None:
        dom = self.domain(dev)
        base = iova & ~(PAGE_SIZE - 1)
        with dom.lock:
            dom.unmap(base, npages)
            dom.iova.free(base, npages << PAGE_SHIFT)
            idle = dom.iova.avail == IOVA_SIZE
        self.iotlb_invalidations += npages
        if idle:   # nothing mapped: give the table pages back (a new domain is made on the next map)
            with self.lock:
                if self.domains.get(dev.id) is dom:
                    del self.domains[dev.id]
                    dom.free()

    def translate(self, dev: Device, iova: int, n: int, is_write: bool) -> list[tuple[int, int]]:
        """Physical runs behind [iova, iova+n); an unmapped or read-only page is
        an IOMMU fault, recorded and raised before any byte moves."""
        dom = self.domain(dev)
        runs: list[tuple[int, int]] = []
        addr, left = iova, n
        while left > 0:
            take = min(PAGE_SIZE - (addr & (PAGE_SIZE - 1)), left)
            t = dom.translate(addr)
            reason = None
            if t is None:
                reason = "translation fault (IOVA not mapped)"
            elif is_write and not t[1]:
                reason = "permission fault (write to a read-only IOVA)"
            if reason is not None:
                f = IommuFault(dev.name, addr, is_write, reason)
                with self.lock:
                    self.faults.append(f)
                raise IommuFaultError(f"IOMMU fault for device {dev.name!r}: {'write' if is_write else 'read'} "
                                      f"at IOVA {addr:#x}: {reason}", addr)
            assert t is not None
            pa = t[0]
            if runs and runs[-1][0] + runs[-1][1] == pa:
                runs[-1] = (runs[-1][0], runs[-1][1] + take)
            else:
                runs.append((pa, take))
            addr += take
            left -= take
        return runs

    def detach(self, dev: Device) -> None:
        with self.lock:
            dom = self.domains.pop(dev.id, None)
        if dom is not None and not self.machine.closed:
            dom.free()


_iommus: weakref.WeakKeyDictionary[PhysicalMemory, Iommu] = weakref.WeakKeyDictionary()
_iommus_lock = threading.Lock()


def iommu_of(machine: PhysicalMemory) -> Iommu:
    """The IOMMU of ``machine`` (created on first use)."""
    with _iommus_lock:
        mmu = _iommus.get(machine)
        if mmu is None:
            mmu = _iommus[machine] = Iommu(machine)
        return mmu
