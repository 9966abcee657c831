"""Area: resources.  Page-table pages, DMA memory, memtype reservations and
I/O windows return to baseline after unmap and free, for coherent buffers,
scatter lists, MMIO and port I/O mappings."""

from __future__ import annotations

import dmamap
from dmamap import PAGE_SIZE
from dmamap.errors import DmaLeakError
from dmamap.testing.checks import (
    buffer_pages,
    compare_snapshots,
    make_device,
    map_buffer,
    map_sg,
    pattern,
    resource_snapshot,
    sg_pages,
)
from dmamap.testing.rule import Check, rule
from dmamap.testing.target import Target


@rule("resources_return_to_baseline", "resources",
      "page-table pages, DMA memory, memtype reservations and I/O windows return to baseline after "
      "unmap and free", ("coherent", "sg", "mmio", "pio"))
def resources_return_to_baseline(t: Target, variant: str) -> None:
    chk = Check("resources_return_to_baseline", variant)
    if variant == "sg":
        t.need("scatter_gather")
    if variant == "pio":
        t.need("port_io")
    with t.machine() as m:
        dev = make_device(m, bars=[0x2000], ports=[(0x300, 16)])
        base = resource_snapshot(m)
        mm = m.new_address_space()
        mm_tables = mm.stats.table_pages
        freed: list[int] = []
        strategies = [None, *t.caps.strategies]
        if variant == "coherent":
            for s in strategies:
                buf = dmamap.dma_alloc_coherent(dev, 5 * PAGE_SIZE)
                mp = map_buffer(dev, mm, buf, s, first_page=1)
                mm.write(mp.start, pattern(s, mp.size))
                dmamap.dma_munmap_coherent(mp.vma)
                freed += [pa for _, _, pa in buffer_pages(dev, buf)]
                dmamap.dma_free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle)
        elif variant == "sg":
            for s in strategies:
                sg = dmamap.dma_alloc_coherent_sg(dev, 10 * PAGE_SIZE, max_chunk_pages=3, seed=1)
                mp = map_sg(dev, mm, sg, s, offset=1, nr_pages=8)
                mm.write(mp.start, pattern(s, mp.size))
                dmamap.dma_munmap_coherent(mp.vma)
                freed += [pa for _, _, pa in sg_pages(dev, sg)]
                dmamap.dma_free_coherent_sg(dev, sg)
        elif variant == "mmio":
            bar, size = dev.bar(0)
            for cache in ("uc", "wc"):
                vma = mm.mmap(size)
                dmamap.mmio_map(vma, bar, size, cache=cache)
                mm.write32(vma.start, 1)
                mm.munmap(vma)
            freed.append(bar)
        else:
            for _ in range(3):
                vma = mm.mmap(PAGE_SIZE)
                dmamap.pio_map(vma, 0x300, 16)
                mm.write8(vma.start, 1)
                mm.munmap(vma)
        if mm.stats.table_pages != mm_tables:
            chk.fail(mm.root, f"the user address space holds {mm.stats.table_pages} page-table pages after "
                              f"every unmap; it started with {mm_tables}")
        for pa in freed:
            mt = m.memtype_lookup(pa)
            if mt is not None:
                chk.fail(pa, f"a {mt} memtype reservation outlives the unmap and free of pa {pa:#x}")
        mm.close()
        compare_snapshots(chk, base, resource_snapshot(m), 0, "machine resources")
        try:
            dev.remove()
        except DmaLeakError as exc:
            chk.fail(exc.addr, f"device release still finds DMA buffers: {exc}")
