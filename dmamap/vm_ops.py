"""VmOperations (struct vm_operations_struct): what a VMA's owner is told as the
VMA lives -- a new VMA mapping the same object (a split piece), a VMA going, a
split it may refuse, a fault.  One object is shared by every VMA of a memory
kind; per-VMA state lives on the VMA (``vma.private_data``), as drivers keep it
in ``vm_private_data``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dmamap.mm import Vma, VmFault

__all__ = ["VmOperations"]


@dataclass(frozen=True)
class VmOperations:
    """The callbacks of a memory kind, each optional.

    * ``open(vma)``: a new VMA now maps the object (the piece a split made);
    * ``close(vma)``: a VMA (or a piece of one) goes: munmap or the address space closing;
    * ``may_split(vma, addr)``: raise to refuse splitting ``vma`` at ``addr``
      (munmap of part of it then fails with nothing changed);
    * ``mremap(vma)``: the VMA is about to move or grow (mremap); raise to refuse;
    * ``fault(vmf)``: the Python fault handler (see :meth:`Vma.set_fault_handler`).
    """

    name: str
    open: Callable[[Vma], None] | None = None
    close: Callable[[Vma], None] | None = None
    may_split: Callable[[Vma, int], None] | None = None
    mremap: Callable[[Vma], None] | None = None
    fault: Callable[[VmFault], Any] | None = None
