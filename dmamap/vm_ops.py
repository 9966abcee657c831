"""VmOperations (struct vm_operations_struct): what a VMA's owner is told as the
VMA lives -- a new VMA mapping the same object (a split piece), a VMA going, a
split it may refuse, a fault, fault-around, a huge fault, the first write to a
read-only page, and ptrace-style accesses.  One object is shared by every VMA
of a memory kind; per-VMA state lives on the VMA (``vma.private_data``), as
drivers keep it in ``vm_private_data``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dmamap._check import PAGE_SHIFT, PAGE_SIZE, u64
from dmamap.errors import InvalidArgumentError

if TYPE_CHECKING:
    from dmamap.mm import Vma, VmFault

__all__ = ["VmOperations", "VM_FAULT_FALLBACK", "PMD_ORDER", "fault_around_bytes", "set_fault_around_bytes"]

#: huge_fault's "no huge page here": the fault goes on with ->fault (include/linux/mm_types.h).
VM_FAULT_FALLBACK = 0x000800
#: The order of a PMD-sized (2 MiB) page, the order huge_fault is asked for.
PMD_ORDER = 9
_PTRS_PER_PTE = 512

_around_lock = threading.Lock()
_around_pages = 65536 >> PAGE_SHIFT   # mm/memory.c: fault_around_pages, 64 KiB by default


def fault_around_pages() -> int:
    """The fault-around window in pages (1: fault-around is off)."""
    return _around_pages


def fault_around_bytes() -> int:
    """The fault-around window (/sys/kernel/debug/fault_around_bytes), in bytes."""
    return _around_pages << PAGE_SHIFT


def set_fault_around_bytes(nbytes: int) -> None:
    """Set the fault-around window as fault_around_bytes_set does: at most one
    page table's worth (2 MiB), rounded down to a power of two, at least a page
    (one page turns fault-around off)."""
    nbytes = u64("fault_around_bytes", nbytes)
    if nbytes // PAGE_SIZE > _PTRS_PER_PTE:
        raise InvalidArgumentError(f"fault_around_bytes {nbytes:#x} is more than one page table maps (-EINVAL)")
    pages = nbytes >> PAGE_SHIFT
    global _around_pages
    with _around_lock:
        _around_pages = 1 << (pages.bit_length() - 1) if pages else 1


def fault_around_window(vmf: VmFault) -> tuple[int, int]:
    """do_fault_around's window for a read fault: the (start_pgoff, end_pgoff)
    map_pages is given, inclusive, aligned to fault_around_pages and clamped to
    the VMA and to the faulting address's page table."""
    nr_pages = _around_pages
    vma = vmf.vma
    pte_off = (vmf.address >> PAGE_SHIFT) % _PTRS_PER_PTE
    vma_off = vmf.pgoff - vma.vm_pgoff
    from_pte = max(pte_off - pte_off % nr_pages, pte_off - min(pte_off, vma_off))
    to_pte = min(from_pte + nr_pages, _PTRS_PER_PTE, pte_off + vma.nr_pages - vma_off) - 1
    return vmf.pgoff + from_pte - pte_off, vmf.pgoff + to_pte - pte_off


@dataclass(frozen=True)
class VmOperations:
    """The callbacks of a memory kind, each optional.

    * ``open(vma)``: a new VMA now maps the object (the piece a split made);
    * ``close(vma)``: a VMA (or a piece of one) goes: munmap or the address space
      closing.  A VMA whose ops have ``close`` never merges with a neighbour;
    * ``may_split(vma, addr)``: raise to refuse splitting ``vma`` at ``addr``
      (munmap of part of it then fails with nothing changed);
    * ``mremap(vma)``: the VMA is about to move or grow (mremap); raise to refuse;
    * ``fault(vmf)``: the Python fault handler (see :meth:`Vma.set_fault_handler`);
    * ``map_pages(vmf, start_pgoff, end_pgoff)``: fault-around on a read fault
      (do_fault_around), called before ``fault`` with the window of object pages
      to map if it can cheaply (vm_insert_page / vmf_insert_pfn of what it has);
      when it maps the faulting page, ``fault`` is not called;
    * ``huge_fault(vmf, order)``: a fault in a 2 MiB-aligned, 2 MiB-sized window
      of the VMA whose PMD is empty (create_huge_pmd); it maps a block with
      :func:`~dmamap.mm.vmf_insert_pfn_pmd` and returns ``VM_FAULT_NOPAGE``, or
      returns ``VM_FAULT_FALLBACK`` for the 4 KiB path (``fault``);
    * ``page_mkwrite(vmf)``: the first write to a page of a shared writable VMA
      (do_shared_fault / wp_page_shared): its PTEs are installed read-only while
      the ops have it, and the write makes the PTE writable only after this
      returns (``None`` or ``VM_FAULT_NOPAGE``); ``VM_FAULT_SIGBUS`` or an
      exception fails the access;
    * ``access(vma, addr, buf, write)``: access_process_vm's way into a VM_IO /
      VM_PFNMAP VMA (ptrace, /proc/pid/mem): read into or write from ``buf`` (a
      writable buffer for a read) at ``addr``, returning the bytes done;
      :func:`~dmamap.mm.generic_access_phys` is the standard one for MMIO.
    """

    name: str
    open: Callable[[Vma], None] | None = None
    close: Callable[[Vma], None] | None = None
    may_split: Callable[[Vma, int], None] | None = None
    mremap: Callable[[Vma], None] | None = None
    fault: Callable[[VmFault], Any] | None = None
    map_pages: Callable[[VmFault, int, int], Any] | None = None
    huge_fault: Callable[[VmFault, int], Any] | None = None
    page_mkwrite: Callable[[VmFault], Any] | None = None
    access: Callable[[Vma, int, Any, bool], int] | None = None
