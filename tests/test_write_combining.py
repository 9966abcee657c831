"""The write-combining buffer: a doorbell after WC writes without wmb() lets
the device read old data; with the barrier it reads the new data."""

from __future__ import annotations

import pytest

import dmamap as d
from dmamap.barrier import wcb_stats
from dmamap.errors import InvalidArgumentError

DOORBELL = 0


def _ring(m: d.Machine) -> tuple[d.Device, list[bytes], d.Vma]:
    """A device whose doorbell register DMA-reads the 16-byte descriptor at the
    bus address written to it; the kernel maps its registers uncached."""
    seen: list[bytes] = []

    def write(off: int, size: int, value: int) -> None:
        if off == DOORBELL:
            seen.append(dev.dma_read(value, 16))

    dev = m.add_device("nic", bars=[d.Bar(4096, read=lambda o, s: 0, write=write)])
    regs = m.kernel.mmap(4096)
    d.mmio_map(regs, dev.bar(0)[0], 4096)   # uncached (Device-nGnRnE on arm, UC on x86)
    return dev, seen, regs


def _post(m: d.Machine, regs: d.Vma, desc_va: int, desc_bus: int, payload: bytes, barrier: bool) -> None:
    m.kernel.write(desc_va, payload)
    if barrier:
        d.wmb(m)
    m.kernel.write64(regs.start + DOORBELL, desc_bus)


@pytest.mark.parametrize("barrier", [False, True])
def test_arm_coherent_descriptor_and_doorbell(barrier: bool) -> None:
    """arm's coherent buffers are NORMAL_NC: their stores gather."""
    with d.Machine("arm", ram=16 << 20) as m:
        d.set_write_combining(m, 4)
        dev, seen, regs = _ring(m)
        ring = d.dma_alloc_coherent(dev, 4096)
        _post(m, regs, ring.cpu_addr, ring.dma_handle, b"descriptor #0001", barrier)
        assert seen == [b"descriptor #0001" if barrier else bytes(16)]
        # the uncached doorbell write drained the buffer after itself: memory is right now
        assert dev.dma_read(ring.dma_handle, 16) == b"descriptor #0001"
        d.dma_free_coherent(dev, 4096, ring.cpu_addr, ring.dma_handle)


@pytest.mark.parametrize("barrier", [False, True])
def test_x86_wc_mapping(barrier: bool) -> None:
    with d.Machine("x86", ram=16 << 20, sram=1 << 20) as m:
        d.set_write_combining(m, 4)
        dev, seen, regs = _ring(m)
        sram = next(r for r in m.memory_map if r.kind == "sram").base
        wc = m.kernel.mmap(4096)
        d.remap_pfn_range(wc, wc.start, sram >> 12, 4096, d.PgProt.make("x86_64", write=True, user=False,
                                                                         cache="WC"))
        _post(m, regs, wc.start + 64, sram + 64, b"x86 descriptor!!", barrier)
        assert seen == [b"x86 descriptor!!" if barrier else bytes(16)]


def test_merging_eviction_and_no_gathering_when_uncached() -> None:
    with d.Machine("arm", ram=16 << 20) as m:
        d.set_write_combining(m, 2)
        dev = m.add_device("dev")
        buf = d.dma_alloc_coherent(dev, 4096)
        before = wcb_stats(m)
        for i in range(8):
            m.kernel.write8(buf.cpu_addr + i, 0x41 + i)   # eight stores, one line: merged
        assert wcb_stats(m).merges - before.merges == 7
        assert dev.dma_read(buf.dma_handle, 8) == bytes(8)
        m.kernel.write(buf.cpu_addr + 64, b"L1")
        m.kernel.write(buf.cpu_addr + 128, b"L2")   # a third line evicts the oldest (line 0)
        assert wcb_stats(m).evictions - before.evictions == 1
        assert dev.dma_read(buf.dma_handle, 8) == b"ABCDEFGH"
        assert dev.dma_read(buf.dma_handle + 64, 2) == bytes(2)
        assert m.kernel.read(buf.cpu_addr + 64, 2) == b"L1"   # a WC load sees the CPU's own stores
        assert dev.dma_read(buf.dma_handle + 128, 2) == b"L2"
        d.set_write_combining(m, 0)
        d.dma_free_coherent(dev, 4096, buf.cpu_addr, buf.dma_handle)
        with pytest.raises(InvalidArgumentError):
            d.set_write_combining(m, 99)


def test_off_by_default() -> None:
    with d.Machine("arm", ram=16 << 20) as m:
        dev = m.add_device("dev")
        buf = d.dma_alloc_coherent(dev, 4096)
        m.kernel.write(buf.cpu_addr, b"now")
        assert dev.dma_read(buf.dma_handle, 3) == b"now"
        d.dma_free_coherent(dev, 4096, buf.cpu_addr, buf.dma_handle)
