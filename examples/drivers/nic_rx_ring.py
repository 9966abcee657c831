"""A scatter-gather NIC receive ring mapped to user space (an AF_XDP /
netmap-style zero-copy receive path).

The receive buffers are a discontiguous coherent scatter list mapped as one
linear user range (dma_mmap_coherent_sg); the descriptor ring is one
coherent page mapped too.  The NIC DMA-writes a frame into the next buffer,
writes its descriptor and interrupts; the kernel's handler acknowledges the
interrupt, counts the frames and gives the slots back by ringing the tail
doorbell once user space has consumed them.

Run it: ``python examples/drivers/nic_rx_ring.py [platform]``.
"""

from __future__ import annotations

import inspect
import struct
import sys

import dmamap
from dmamap import PAGE_SIZE

RING = 16                      # descriptors, one 4 KiB buffer each
DESC = struct.Struct("<QHHI")  # buffer bus address, length, flags, reserved (16 bytes)
DESC_DONE = 1
IRQ_LINE = 11
REG_RING_LO, REG_RING_HI, REG_TAIL, REG_INT_STATUS, REG_INT_MASK = 0x00, 0x04, 0x08, 0x0C, 0x10


def partial_munmap(mm: dmamap.AddressSpace, vma: dmamap.Vma, addr: int, length: int) -> bool:
    """munmap(2) of part of a VMA, splitting it, where dmamap has it; False otherwise."""
    if "length" not in inspect.signature(mm.munmap).parameters:
        return False
    mm.munmap(vma, addr, length)   # type: ignore[call-arg]
    return True


class Nic:
    """The hardware side: a receive engine that owns slots [head, tail)."""

    def __init__(self) -> None:
        self.regs = dict.fromkeys(range(0, 0x14, 4), 0)
        self.head = 0
        self.dev: dmamap.Device | None = None
        self.dropped = 0

    def read(self, off: int, size: int) -> int:
        v = self.regs[off]
        if off == REG_INT_STATUS:
            self.regs[off] = 0
        return v

    def write(self, off: int, size: int, value: int) -> None:
        self.regs[off] = value

    def receive(self, frame: bytes) -> None:
        """A frame arrives on the wire."""
        assert self.dev is not None and len(frame) <= PAGE_SIZE
        if self.head == self.regs[REG_TAIL]:
            self.dropped += 1          # no free slot: the frame is lost
            return
        ring = self.regs[REG_RING_LO] | self.regs[REG_RING_HI] << 32
        slot = ring + self.head * DESC.size
        addr, _, _, _ = DESC.unpack(self.dev.dma_read(slot, DESC.size))
        self.dev.dma_write(addr, frame)
        self.dev.dma_write(slot, DESC.pack(addr, len(frame), DESC_DONE, 0))
        self.head = (self.head + 1) % RING
        self.regs[REG_INT_STATUS] = 1
        if not self.regs[REG_INT_MASK]:
            self.dev.raise_irq()


class RxDriver:
    def __init__(self, machine: dmamap.Machine, dev: dmamap.Device) -> None:
        self.m, self.dev = machine, dev
        self.regs = dmamap.ioremap(machine, *dev.bar(0))
        self.bufs = dmamap.dma_alloc_coherent_sg(dev, RING * PAGE_SIZE, max_chunk_pages=3, seed=7)
        self.ring = dmamap.dma_alloc_coherent(dev, PAGE_SIZE)
        for i in range(RING):
            entry, page = self.bufs.locate(i)
            bus = entry.dma_handle + page * PAGE_SIZE
            machine.kernel.write(self.ring.cpu_addr + i * DESC.size, DESC.pack(bus, 0, 0, 0))
        self.frames = 0
        dmamap.request_irq(machine, IRQ_LINE, self.interrupt, 0, "nic-rx", self)
        dmamap.writel(self.ring.dma_handle & 0xFFFFFFFF, self.regs + REG_RING_LO)
        dmamap.writel(self.ring.dma_handle >> 32, self.regs + REG_RING_HI)
        dmamap.writel(RING - 1, self.regs + REG_TAIL)   # one slot always empty: head == tail means full

    def interrupt(self, irq: int, dev_id: object) -> int:
        if not dmamap.readl(self.regs + REG_INT_STATUS):
            return dmamap.IRQ_NONE
        self.frames += 1
        return dmamap.IRQ_HANDLED

    def mmap_buffers(self, vma: dmamap.Vma) -> None:
        dmamap.dma_mmap_coherent_sg(self.dev, vma, self.bufs)

    def mmap_ring(self, vma: dmamap.Vma) -> None:
        dmamap.dma_mmap_coherent(self.dev, vma, *self.ring)

    def release(self, upto: int) -> None:
        """User space consumed slots up to ``upto``: hand them back (the tail doorbell)."""
        dmamap.writel((upto - 1) % RING, self.regs + REG_TAIL)

    def remove(self) -> None:
        dmamap.free_irq(self.m, IRQ_LINE, self)
        dmamap.dma_free_coherent(self.dev, PAGE_SIZE, self.ring.cpu_addr, self.ring.dma_handle)
        dmamap.dma_free_coherent_sg(self.dev, self.bufs)
        dmamap.iounmap(self.regs)


def main(platform: str = "x86") -> dict[str, object]:
    with dmamap.Machine(platform, ram=32 << 20) as m:
        nic = Nic()
        dev = dmamap.Device(m, "nic", bars=[dmamap.Bar(PAGE_SIZE, read=nic.read, write=nic.write)], irqs=[IRQ_LINE])
        nic.dev = dev
        drv = RxDriver(m, dev)
        mm = m.new_address_space()
        bufs = mm.mmap(RING * PAGE_SIZE, prot="r")
        drv.mmap_buffers(bufs)
        ring = mm.mmap(PAGE_SIZE)
        drv.mmap_ring(ring)

        frames = [bytes([n]) * (60 + 97 * n) for n in range(40)]
        got: list[bytes] = []
        cursor = 0
        for start in range(0, len(frames), 6):       # bursts of 6 frames, then user space polls
            for f in frames[start:start + 6]:
                nic.receive(f)
            while True:
                addr, length, flags, _ = DESC.unpack(mm.read(ring.start + cursor % RING * DESC.size, DESC.size))
                if not flags & DESC_DONE:
                    break
                got.append(mm.read(bufs.start + cursor % RING * PAGE_SIZE, length))   # zero-copy read
                mm.write(ring.start + cursor % RING * DESC.size, DESC.pack(addr, 0, 0, 0))
                cursor += 1
            drv.release(cursor)
        assert got == frames and nic.dropped == 0
        assert drv.frames == len(frames) == dmamap.irq_stats(m, IRQ_LINE).handled
        result = {"platform": platform, "frames": len(got), "chunks": len(drv.bufs),
                  "user_cache": mm.translate(bufs.start).cache, "attribute_reports": len(m.attribute_reports)}
        # user space gives back the upper half of its buffer view (munmap of part of the VMA)
        half = RING // 2 * PAGE_SIZE
        split = partial_munmap(mm, bufs, bufs.start + half, half)
        if split:
            low = mm.find_vma(bufs.start)
            assert low is not None and low.end == bufs.start + half and mm.find_vma(bufs.start + half) is None
            for slot in range(RING // 2):   # the kept half still shows the last frame of each slot
                last = max(k for k in range(len(frames)) if k % RING == slot)
                assert mm.read(low.start + slot * PAGE_SIZE, len(frames[last])) == frames[last]
            try:
                mm.read(bufs.start + half, 1)
            except dmamap.AccessFault:
                pass
            else:
                raise AssertionError("a read of the unmapped half did not fault")
            bufs = low
        result["partial_munmap"] = split
        dmamap.dma_munmap_coherent(bufs)
        dmamap.dma_munmap_coherent(ring)
        drv.remove()
        return result


if __name__ == "__main__":
    print(main(*sys.argv[1:2]))
