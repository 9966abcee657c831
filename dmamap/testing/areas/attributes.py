"""Area: attributes.  The user PTE of a coherent mapping, decoded from raw
page-table memory, has the memory type of the kernel's own alias of the same
memory (a cacheable alias of uncached DMA memory is the bug this catches)."""

from __future__ import annotations

import dmamap
from dmamap import PAGE_SIZE
from dmamap.testing.checks import check_attributes, make_device, map_buffer, map_sg, touch
from dmamap.testing.rule import Check, rule
from dmamap.testing.target import STRATEGY_VARIANTS, Target


@rule("user_attribute_matches_kernel", "attributes",
      "the user PTE (decoded from raw page-table memory) has the memory type of the kernel alias",
      STRATEGY_VARIANTS)
def user_attribute_matches_kernel(t: Target, variant: str) -> None:
    strategy = t.strategy(variant)
    chk = Check("user_attribute_matches_kernel", variant)
    with t.machine() as m:
        dev = make_device(m)
        mm = m.new_address_space()
        buf = dmamap.dma_alloc_coherent(dev, 5 * PAGE_SIZE)
        mp = map_buffer(dev, mm, buf, strategy, first_page=1)
        touch(mp)
        check_attributes(chk, m, mp)
        if t.caps.scatter_gather:
            sg = dmamap.dma_alloc_coherent_sg(dev, 9, max_chunk_pages=4, seed=3)
            mp = map_sg(dev, mm, sg, strategy, offset=1, nr_pages=8)
            touch(mp)
            check_attributes(chk, m, mp)
