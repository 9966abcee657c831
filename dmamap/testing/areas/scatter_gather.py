"""Area: scatter-gather.  Every page of a scatter-gather mapping, at a random
offset and length, lands on the right chunk and byte, and nothing past the
mapped window is reachable."""

from __future__ import annotations

import random

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE
from dmamap.errors import AccessFault
from dmamap.testing.checks import make_device, map_sg, raw_entry
from dmamap.testing.rule import Check, rule
from dmamap.testing.target import STRATEGY_VARIANTS, Target


def _sg_shape(seed: object) -> tuple[int, int, int, int, int]:
    """(total pages, max chunk pages, sg seed, offset, nr_pages) for one random trial."""
    rng = random.Random(repr(seed))
    total = rng.randint(6, 40)
    max_chunk = rng.randint(1, 8)
    offset = rng.randrange(total)
    return total, max_chunk, rng.randrange(1 << 30), offset, rng.randint(1, total - offset)


@rule("sg_linear_mapping", "scatter-gather",
      "every page of a scatter-gather mapping (random offset / nr_pages) lands on the right chunk and byte",
      STRATEGY_VARIANTS, needs="scatter_gather")
def sg_linear_mapping(t: Target, variant: str) -> None:
    strategy = t.strategy(variant)
    chk = Check("sg_linear_mapping", variant)
    with t.machine() as m:
        dev = make_device(m)
        mm = m.new_address_space()
        for trial in range(4):
            total, max_chunk, seed, offset, n = _sg_shape((variant, trial))
            sg = dmamap.dma_alloc_coherent_sg(dev, total * PAGE_SIZE, max_chunk_pages=max_chunk, seed=seed)
            extra = 1 if offset + n < total else 0
            mp = map_sg(dev, mm, sg, strategy, offset=offset, nr_pages=n, vma_pages=n + extra)
            rng = random.Random(repr((variant, trial, "bytes")))
            for i in range(n):
                chunk, pg = sg.locate(offset + i)
                cpu, bus, pa = mp.pages[i]
                va = mp.start + (i << PAGE_SHIFT)
                where = (f"sg page {offset + i} (chunk {sg.entries.index(chunk)} page {pg} of {chunk.nr_pages}, "
                         f"{len(sg)} chunks)")
                byte = rng.randrange(PAGE_SIZE - 8)
                tag = rng.randbytes(8)
                dev.dma_write(bus + byte, tag)
                got = mm.read(va + byte, 8)
                if got != tag:
                    e = raw_entry(m, mm, va)
                    chk.fail(va + byte, f"user page {i} should be {where} at pa {pa:#x}, but reads other bytes "
                                        f"(PTE maps pa {e.pa if e else 0:#x})")
                e = raw_entry(m, mm, va)
                if e is None or e.pa != pa:
                    chk.fail(va, f"user page {i} should map {where} at pa {pa:#x}, but the raw PTE maps "
                                 f"{'nothing' if e is None else hex(e.pa)}")
                tag = rng.randbytes(8)
                mm.write(va + byte, tag)
                if dev.dma_read(bus + byte, 8) != tag:
                    chk.fail(va + byte, f"a user write to page {i} did not reach {where} (bus {bus + byte:#x})")
            if extra:
                past = mp.start + (n << PAGE_SHIFT)
                try:
                    mm.read(past, 1)
                except AccessFault:
                    pass
                else:
                    e = raw_entry(m, mm, past)
                    chk.fail(past, f"the VMA page past the {n} mapped pages is accessible (maps "
                                   f"{hex(e.pa) if e else '?'}): only pages [{offset}, {offset + n}) may be mapped")
            dmamap.dma_munmap_coherent(mp.vma)
            dmamap.dma_free_coherent_sg(dev, sg)
