"""Area: kernel side.  ``ioremap`` gives the kernel an uncached, special
mapping of the BAR through which each ``readX``/``writeX`` makes exactly one
device callback at its width, little-endian; a ``dma_mmap_wc`` user mapping
has the memory type of the kernel's own alias of the buffer, write-combining
(not cacheable) wherever DMA does not snoop."""

from __future__ import annotations

from typing import Any

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE
from dmamap.device import Bar
from dmamap.testing.checks import make_device, raw_entry
from dmamap.testing.pagetable import DEVICE, walk
from dmamap.testing.rule import Check, rule
from dmamap.testing.target import Target

_ACCESSORS = {1: (dmamap.readb, dmamap.writeb), 2: (dmamap.readw, dmamap.writew),
              4: (dmamap.readl, dmamap.writel), 8: (dmamap.readq, dmamap.writeq)}


@rule("ioremap_readl_round_trip", "kernel side",
      "ioremap maps the BAR uncached and special; each readX/writeX makes one device callback at its width, "
      "and values round-trip little-endian through a register file",
      ("ioremap", "ioremap_wc"))
def ioremap_readl_round_trip(t: Target, variant: str) -> None:
    chk = Check("ioremap_readl_round_trip", variant)
    log: list[tuple[Any, ...]] = []
    regs = bytearray(0x2000)

    def rd(off: int, size: int) -> int:
        log.append(("read", off, size))
        return int.from_bytes(regs[off:off + size], "little")

    def wr(off: int, size: int, value: int) -> None:
        log.append(("write", off, size, value))
        regs[off:off + size] = value.to_bytes(size, "little")

    with t.machine() as m:
        dev = make_device(m, bars=[Bar(0x2000, read=rd, write=wr)])
        base, size = dev.bar(0)
        io = (dmamap.ioremap if variant == "ioremap" else dmamap.ioremap_wc)(m, base, size)
        for i in range(size >> PAGE_SHIFT):
            va = int(io) + (i << PAGE_SHIFT)
            e = walk(m, m.kernel.root, va)
            if e is None or e.pa != base + (i << PAGE_SHIFT):
                chk.fail(va, f"ioremap page {i} maps {'nothing' if e is None else hex(e.pa)}, not "
                             f"{base + (i << PAGE_SHIFT):#x}")
                return
            if e.cacheable or (variant == "ioremap" and e.cache not in DEVICE):
                chk.fail(va, f"{variant} mapped the BAR {e.cache} (PTE {e.entry:#x}); it needs "
                             f"{'a Device / uncached type' if variant == 'ioremap' else 'an uncached type'}")
            if e.user:
                chk.fail(va, f"{variant} mapping is user-accessible (PTE {e.entry:#x})")
        for width, (read, write) in _ACCESSORS.items():
            for off in (0, 5 * width, 0x1000 + width, size - width):
                value = (0x8877665544332211 * (off + 3)) & ((1 << (8 * width)) - 1)
                log.clear()
                write(value, io + off)
                if log != [("write", off, width, value)]:
                    chk.fail(int(io) + off, f"a {8 * width}-bit write{'bwlq'[width.bit_length() - 1]} made device "
                                            f"callbacks {log}; expected one write of {value:#x} at {off:#x}")
                if regs[off:off + width] != value.to_bytes(width, "little"):
                    chk.fail(int(io) + off, f"the register file holds {regs[off:off + width].hex()} after writing "
                                            f"{value:#x}: not little-endian")
                log.clear()
                got = read(io + off)
                if log != [("read", off, width)] or got != value:
                    chk.fail(int(io) + off, f"a {8 * width}-bit read returned {got:#x} with callbacks {log}; "
                                            f"expected {value:#x} from one read at {off:#x}")
        dmamap.iounmap(io)
        if walk(m, m.kernel.root, int(io)) is not None:
            chk.fail(int(io), "iounmap left the kernel PTE in place")


@rule("dma_mmap_wc_attribute", "kernel side",
      "a dma_mmap_wc user PTE has the kernel alias's memory type, and is not cacheable where DMA does not snoop")
def dma_mmap_wc_attribute(t: Target, variant: str) -> None:
    chk = Check("dma_mmap_wc_attribute")
    with t.machine() as m:
        dev = make_device(m)
        mm = m.new_address_space()
        buf = dmamap.dma_alloc_wc(dev, 3 * PAGE_SIZE)
        vma = mm.mmap(3 * PAGE_SIZE)
        dmamap.dma_mmap_wc(dev, vma, *buf, strategy="prefault")   # the attribute, not the fault path
        mm.touch(vma.start, 3)
        snoops = m.backend is not None and m.backend.dma_coherent
        for i in range(3):
            va, cpu = vma.start + (i << PAGE_SHIFT), int(buf.cpu_addr) + (i << PAGE_SHIFT)
            u, k = raw_entry(m, mm, va), walk(m, m.kernel.root, cpu)
            if u is None or k is None:
                chk.fail(va, f"page {i}: no {'user' if u is None else 'kernel'} PTE after the page was touched")
                return
            if u.pa != k.pa:
                chk.fail(va, f"page {i}: the user PTE maps {u.pa:#x}, the kernel alias {k.pa:#x}")
            if u.cache != k.cache:
                chk.fail(va, f"page {i}: user PTE {u.entry:#x} is {u.cache} but the kernel alias {cpu:#x} is "
                             f"{k.cache}")
            if not snoops and u.cacheable:
                chk.fail(va, f"page {i}: dma_mmap_wc gave a cacheable user PTE ({u.cache}) on a platform whose "
                             f"DMA does not snoop the caches")
        mm.write32(vma.start + PAGE_SIZE, 0x5EED5EED)
        if dev.dma_read(buf.dma_handle + PAGE_SIZE, 4) != (0x5EED5EED).to_bytes(4, "little"):
            chk.fail(vma.start + PAGE_SIZE, "a user store through the write-combining mapping is not what the "
                                            "device reads")
        dmamap.dma_munmap_coherent(vma)
        dmamap.dma_free_wc(dev, buf.size, buf.cpu_addr, buf.dma_handle)
