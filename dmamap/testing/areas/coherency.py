"""Area: coherency.  A coherent mapping, plain and scatter-gather, is coherent
both ways (device to user space, user space to device) with no sync call, for
the backend's default strategy and every strategy it allows."""

from __future__ import annotations

import dmamap
from dmamap import PAGE_SIZE
from dmamap.testing.checks import check_coherent, make_device, map_buffer, map_sg
from dmamap.testing.rule import Check, rule
from dmamap.testing.target import STRATEGY_VARIANTS, Target


@rule("coherency_mmap", "coherency",
      "a dma_mmap_coherent mapping is coherent both ways with no sync call", STRATEGY_VARIANTS)
def coherency_mmap(t: Target, variant: str) -> None:
    strategy = t.strategy(variant)
    chk = Check("coherency_mmap", variant)
    with t.machine() as m:
        dev = make_device(m)
        buf = dmamap.dma_alloc_coherent(dev, 6 * PAGE_SIZE)
        mm = m.new_address_space()
        whole = map_buffer(dev, mm, buf, strategy)
        check_coherent(chk, dev, whole, ("whole", variant))
        part = map_buffer(dev, mm, buf, strategy, first_page=2, nr_pages=3)   # with an offset
        check_coherent(chk, dev, part, ("offset", variant))


@rule("coherency_mmap_sg", "coherency",
      "a dma_mmap_coherent_sg mapping is coherent both ways with no sync call", STRATEGY_VARIANTS,
      needs="scatter_gather")
def coherency_mmap_sg(t: Target, variant: str) -> None:
    strategy = t.strategy(variant)
    chk = Check("coherency_mmap_sg", variant)
    with t.machine() as m:
        dev = make_device(m)
        sg = dmamap.dma_alloc_coherent_sg(dev, 12 * PAGE_SIZE, max_chunk_pages=3, seed=7)
        mm = m.new_address_space()
        check_coherent(chk, dev, map_sg(dev, mm, sg, strategy, offset=0, nr_pages=12), ("sg", variant))
        check_coherent(chk, dev, map_sg(dev, mm, sg, strategy, offset=2, nr_pages=8), ("sg-off", variant))
