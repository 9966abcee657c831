"""Access to another process's memory as ptrace and /proc/pid/mem make it
(mm/memory.c __access_remote_vm): page by page through the normal path
(get_user_pages), and through the VMA's ``vm_ops.access`` where that path
refuses -- VM_IO / VM_PFNMAP mappings, whose memory has no page descriptor.
``generic_access_phys`` is the standard ``access`` of MMIO mappings."""

from __future__ import annotations

from typing import overload

from dmamap._check import PAGE_SHIFT, PAGE_SIZE, u64
from dmamap.errors import DmamapError, InvalidArgumentError, MachineClosedError
from dmamap.mm import AddressSpace, PgProt, Vma, VmFlags, remap_pfn_range

__all__ = ["access_process_vm", "generic_access_phys"]

_NO_GUP = VmFlags.VM_IO | VmFlags.VM_PFNMAP   # check_vma_flags: get_user_pages refuses these


@overload
def access_process_vm(mm: AddressSpace, addr: int, buf: int, *, write: bool = False) -> bytes: ...


@overload
def access_process_vm(mm: AddressSpace, addr: int, buf: bytes | bytearray | memoryview, *,
                      write: bool = True) -> int: ...


def access_process_vm(mm: AddressSpace, addr: int, buf: int | bytes | bytearray | memoryview, *,
                      write: bool = False) -> bytes | int:
    """Read ``buf`` bytes (an int) from, or write ``buf`` (bytes) to, ``mm`` at
    ``addr`` as a debugger does.  Ordinary mappings are accessed page by page,
    faulting pages in, where a page descriptor backs them (get_user_pages); a
    VM_IO / VM_PFNMAP VMA only through its ``vm_ops.access``.  Like the kernel's, it stops at the first page it cannot
    reach and returns what it did: the bytes read, or the count written."""
    if not isinstance(mm, AddressSpace):
        raise TypeError(f"expected an AddressSpace, got {type(mm).__name__}")
    addr = u64("addr", addr)
    if write:
        if isinstance(buf, int):
            raise TypeError("access_process_vm(write=True) takes the bytes to write")
        if not isinstance(buf, (bytes, bytearray, memoryview)):
            raise TypeError(f"buf must be bytes-like, not {type(buf).__name__}")
        data = memoryview(bytes(buf))
        length = len(data)
        out = None
    else:
        if isinstance(buf, bool) or not isinstance(buf, int):
            raise TypeError("access_process_vm(write=False) takes the number of bytes to read")
        length = u64("length", buf)
        out = bytearray(length)
        data = memoryview(out)
    done = 0
    while done < length:
        cur = addr + done
        vma = mm.find_vma(cur)
        if vma is None:
            break
        if vma.vm_flags & _NO_GUP:
            ops = vma.vm_ops
            if ops is None or ops.access is None:
                break
            n = ops.access(vma, cur, data[done:], write)
            if not isinstance(n, int) or isinstance(n, bool):
                raise InvalidArgumentError(f"vm_ops.access returned {n!r}; expected the number of bytes done",
                                           cur)
            if n <= 0:
                break
            done += min(n, length - done)
            continue
        n = min(length - done, PAGE_SIZE - (cur & (PAGE_SIZE - 1)))
        try:   # get_user_pages: fault the page in, then it must be a normal page (vm_normal_page)
            mm.touch(cur, write=write)
            t = mm.translate(cur)
            if t is None or t.special or not mm.machine.pfn_valid(t.pfn):
                break
            if write:
                mm.write(cur, data[done:done + n])
            else:
                data[done:done + n] = mm.read(cur, n)
        except MachineClosedError:
            raise
        except DmamapError:   # the fault-in failed (SIGSEGV, SIGBUS, a refused page): GUP stops here
            break
        done += n
    return done if write else bytes(data[:done])


def generic_access_phys(vma: Vma, addr: int, buf: memoryview | bytearray, write: bool) -> int:
    """mm/memory.c generic_access_phys: find the PFN behind ``addr`` in the page
    tables (follow_pfnmap), map it into the kernel with the user PTE's memory
    type (ioremap_prot) and copy to or from ``buf``; a write needs a writable
    PTE.  Returns the bytes done, up to the end of the page (the kernel maps
    ``len`` bytes at once, assuming the range is physically contiguous)."""
    if not isinstance(vma, Vma):
        raise TypeError(f"expected a Vma, got {type(vma).__name__}")
    mm = vma.mm
    addr = u64("addr", addr)
    t = mm.translate(addr)
    if t is None or not vma.start <= addr < vma.end:
        return -1   # -EINVAL: nothing mapped there
    if write and not t.writable:
        return -1
    n = min(len(buf), PAGE_SIZE - (addr & (PAGE_SIZE - 1)))
    if n == 0:
        return 0
    machine = mm.machine
    kernel = machine.kernel
    page = t.pa & ~(PAGE_SIZE - 1)
    kvma = kernel.mmap(PAGE_SIZE, prot="rw", align=PAGE_SIZE)
    try:
        prot = PgProt.make(machine.isa, write=True, user=False, cache=t.cache)
        remap_pfn_range(kvma, kvma.start, page >> PAGE_SHIFT, PAGE_SIZE, prot)
        kaddr = kvma.start + (t.pa - page)
        if write:
            kernel.write(kaddr, bytes(buf[:n]))
        else:
            buf[:n] = kernel.read(kaddr, n)
    finally:
        kernel.munmap(kvma)
    return n
