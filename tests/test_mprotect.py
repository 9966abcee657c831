"""mprotect of part of a VMA splits it (mm/mprotect.c mprotect_fixup ->
split_vma): the piece gets new vm_flags and vm_page_prot, its memory type kept,
and its present PTEs rewritten; the rest stays as it was."""

from __future__ import annotations

import pytest

import dmamap
from dmamap import PAGE_SIZE, VmFlags
from dmamap.errors import InvalidArgumentError, ProtectionFault

P = PAGE_SIZE
RAM = 16 << 20


@pytest.mark.parametrize("platform", ["x86", "arm", "riscv"])
def test_mprotect_part_of_a_coherent_mapping(platform: str) -> None:
    with dmamap.Machine(platform, ram=RAM) as m:
        dev = m.add_device("d")
        buf = dmamap.dma_alloc_coherent(dev, 4 * P)
        mm = m.new_address_space()
        vma = mm.mmap(4 * P)
        dmamap.dma_mmap_coherent(dev, vma, *buf, strategy="prefault")
        cache = mm.translate(vma.start).cache
        s = vma.start
        ro = mm.mprotect(vma, s + P, 2 * P, "r")
        assert [(v.start, v.end) for v in mm.vmas] == [(s, s + P), (s + P, s + 3 * P), (s + 3 * P, s + 4 * P)]
        assert not ro.vm_flags & VmFlags.VM_WRITE and vma.vm_flags & VmFlags.VM_WRITE
        assert ro.vm_pgoff == 1 and mm.translate(s + P).cache == cache
        with pytest.raises(ProtectionFault):
            mm.write8(s + P, 1)
        mm.write8(s, 1)
        mm.write8(s + 3 * P, 2)
        assert mm.read8(s + 2 * P) == 0
        dev.dma_write(buf.dma_handle + 2 * P, b"\x05")
        assert mm.read8(s + 2 * P) == 5
        mm.mprotect(ro, prot="rw")   # back to writable, no split needed
        mm.write8(s + P, 3)
        assert len(mm.vmas) == 3


def test_mprotect_refuses_bad_input() -> None:
    with dmamap.Machine("x86", ram=RAM) as m:
        mm = m.new_address_space()
        vma = mm.mmap(2 * P)
        for kw in ({"prot": "q"}, {"addr": vma.start + 1, "length": P, "prot": "r"}):
            with pytest.raises(InvalidArgumentError):
                mm.mprotect(vma, **kw)  # type: ignore[arg-type]
        assert mm.vmas == [vma]
