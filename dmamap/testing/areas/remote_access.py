"""Area: remote access.  A debugger's access_process_vm (ptrace,
/proc/pid/mem) reaches a helper's mapping as Linux's does: through
get_user_pages where normal pages back it -- and then it sees exactly the
device's view of the buffer -- never into a VM_IO / VM_PFNMAP coherent mapping
(which has no ->access), and into MMIO mappings through generic_access_phys,
reading the registers the user mapping reads."""

from __future__ import annotations

import dmamap
from dmamap import PAGE_SIZE, VmFlags
from dmamap.testing.checks import make_device, map_buffer, pattern
from dmamap.testing.rule import Check, rule
from dmamap.testing.target import STRATEGY_VARIANTS, Target


@rule("remote_access_as_linux", "remote access",
      "access_process_vm of a coherent mapping returns the device's bytes where get_user_pages may reach its "
      "pages (normal pages of a non-VM_IO VMA) and nothing from a VM_IO / VM_PFNMAP one; of an MMIO mapping, "
      "the registers, through generic_access_phys",
      STRATEGY_VARIANTS)
def remote_access_as_linux(t: Target, variant: str) -> None:
    strategy = t.strategy(variant)
    chk = Check("remote_access_as_linux", variant)
    with t.machine() as m:
        dev = make_device(m, bars=[PAGE_SIZE])
        mm = m.new_address_space()
        buf = dmamap.dma_alloc_coherent(dev, 3 * PAGE_SIZE)
        mp = map_buffer(dev, mm, buf, strategy)
        data = pattern(("remote", variant), mp.size)
        dev.dma_write(buf.dma_handle, data)
        got = dmamap.access_process_vm(mm, mp.start, mp.size)
        if mp.vma.vm_flags & (VmFlags.VM_IO | VmFlags.VM_PFNMAP):
            if got:
                chk.fail(mp.start, f"access_process_vm read {len(got)} bytes from a VM_IO / VM_PFNMAP mapping "
                                   f"without ->access: get_user_pages must refuse it")
        elif got != data[:len(got)]:
            bad = next(i for i, (a, b) in enumerate(zip(got, data, strict=False)) if a != b)
            chk.fail(mp.start + bad, f"access_process_vm read {got[bad]:#04x} at offset {bad:#x}, the device "
                                     f"holds {data[bad]:#04x}: the pages reached are not the buffer's")
        elif len(got) not in (0, mp.size):
            chk.fail(mp.start + len(got), f"access_process_vm stopped after {len(got)} of {mp.size} bytes of a "
                                          f"mapping whose pages are all mapped alike")
        if variant != "default":
            return
        base = dev.bar(0)[0]
        io = mm.mmap(PAGE_SIZE)
        dmamap.mmio_map(io, base, PAGE_SIZE)
        mm.write32(io.start + 12, 0x5EED5EED)
        want = mm.read(io.start, 16)
        got = dmamap.access_process_vm(mm, io.start, 16)
        if got != want:
            chk.fail(io.start, f"access_process_vm of an MMIO mapping read {got.hex()}, the user mapping reads "
                               f"{want.hex()} (generic_access_phys)")
