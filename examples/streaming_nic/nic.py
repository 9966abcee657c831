"""A streaming-DMA NIC driver prototype, and the NIC it drives.

The TX path maps a header and a payload (kmalloc'ed) as a two-entry scatter
list (``dma_map_sg``), or a small frame with ``dma_map_single``; the RX path
keeps a ring of long-lived ``DMA_FROM_DEVICE`` mappings, syncing each buffer
for the CPU after a frame lands and back for the device before it is
re-posted.  ``run(platform, mistake)`` drives traffic through it; each
``mistake`` is one classic bug (``MISTAKES``), which DMA-API debug names and
which on a non-coherent platform also shows as stale data.

    python examples/streaming_nic/nic.py arm missing-sync
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import dmamap as d

MISTAKES = ("missing-sync", "wrong-direction", "cpu-access-while-device-owned", "leaked-mapping",
            "unchecked-mapping-error")

# register map of the NIC's BAR0 (64-bit registers)
SEG_ADDR, SEG_LEN, SEG_PUSH, TX_GO, RX_ADDR, RX_LEN, RX_POST, RX_DONE_LEN = (8 * i for i in range(8))
RX_BUFS = 4
RX_BUF_SIZE = 2048


class Nic:
    """The device: gathers TX segments by DMA when TX_GO is written, and DMAs a
    received frame into the oldest posted RX buffer."""

    def __init__(self, m: d.Machine, name: str = "nic0") -> None:
        self.regs = [0] * 8
        self.segs: list[tuple[int, int]] = []
        self.posted: list[tuple[int, int]] = []
        self.sent: list[bytes] = []
        self.dev = m.add_device(name, bars=[d.Bar(4096, read=self._read, write=self._write)])

    def _read(self, off: int, size: int) -> int:
        return self.regs[off // 8]

    def _write(self, off: int, size: int, value: int) -> None:
        self.regs[off // 8] = value
        if off == SEG_PUSH:
            self.segs.append((self.regs[SEG_ADDR // 8], self.regs[SEG_LEN // 8]))
        elif off == TX_GO:
            self.sent.append(b"".join(self.dev.dma_read(a, n) for a, n in self.segs))
            self.segs = []
        elif off == RX_POST:
            self.posted.append((self.regs[RX_ADDR // 8], self.regs[RX_LEN // 8]))

    def receive(self, frame: bytes) -> None:
        """A frame arrives from the wire: DMA it into the oldest posted buffer."""
        addr, size = self.posted.pop(0)
        self.dev.dma_write(addr, frame[:size])
        self.regs[RX_DONE_LEN // 8] = min(len(frame), size)


@dataclass
class Driver:
    """The driver: kernel side of the NIC, with at most one deliberate mistake."""

    m: d.Machine
    nic: Nic
    mistake: str | None = None
    rx_bufs: list[tuple[d.KernelAddress, int]] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        base, size = self.nic.dev.bar(0)
        self.vma = self.m.kernel.mmap(4096, prot="rw")
        d.mmio_map(self.vma, base, 4096)
        for _ in range(RX_BUFS):
            buf = d.kmalloc(self.m, RX_BUF_SIZE)
            h = self._map_single(buf, RX_BUF_SIZE, d.DMA_FROM_DEVICE)
            self.rx_bufs.append((buf, h))
            self._post(h)

    @property
    def dev(self) -> d.Device:
        return self.nic.dev

    def writeq(self, off: int, value: int) -> None:
        self.m.kernel.write64(self.vma.start + off, value)

    def readq(self, off: int) -> int:
        return self.m.kernel.read64(self.vma.start + off)

    def _map_single(self, buf: int, size: int, direction: d.DmaDirection) -> int:
        h = d.dma_map_single(self.dev, buf, size, direction)
        if self.mistake != "unchecked-mapping-error" and d.dma_mapping_error(self.dev, h):
            raise MemoryError("dma_map_single failed")
        return h

    def _post(self, h: int) -> None:
        self.writeq(RX_ADDR, h)
        self.writeq(RX_LEN, RX_BUF_SIZE)
        self.writeq(RX_POST, 1)

    # ---- TX ----
    def xmit_small(self, frame: bytes) -> bytes:
        """A small frame: copy it into a buffer, dma_map_single, send, unmap.
        Returns the frame the driver meant to send."""
        buf = d.kmalloc(self.m, len(frame))
        self.m.kernel.write(buf, frame)
        h = self._map_single(buf, len(frame), d.DMA_TO_DEVICE)
        if self.mistake == "cpu-access-while-device-owned":
            frame = frame[:1].upper() + frame[1:]
            self.m.kernel.write(buf, frame[:1])   # "fix up" the header after mapping it
        self.writeq(SEG_ADDR, h)
        self.writeq(SEG_LEN, len(frame))
        self.writeq(SEG_PUSH, 1)
        self.writeq(TX_GO, 1)
        if self.mistake != "leaked-mapping":
            d.dma_unmap_single(self.dev, h, len(frame), d.DMA_TO_DEVICE)
            d.kfree(self.m, buf)
        return frame

    def xmit_sg(self, header: bytes, payload: bytes) -> None:
        """Header and payload in separate buffers: one scatter list, one frame."""
        hb, pb = d.kmalloc(self.m, len(header)), d.kmalloc(self.m, len(payload))
        self.m.kernel.write(hb, header)
        self.m.kernel.write(pb, payload)
        sgl = d.sg_init_table(2)
        d.sg_set_buf(sgl[0], hb, len(header))
        d.sg_set_buf(sgl[1], pb, len(payload))
        n = d.dma_map_sg(self.dev, sgl, 2, d.DMA_TO_DEVICE)
        if n == 0:
            raise MemoryError("dma_map_sg failed")
        for s in d.for_each_sg(sgl, n):
            self.writeq(SEG_ADDR, d.sg_dma_address(s))
            self.writeq(SEG_LEN, d.sg_dma_len(s))
            self.writeq(SEG_PUSH, 1)
        self.writeq(TX_GO, 1)
        d.dma_unmap_sg(self.dev, sgl, 2, d.DMA_TO_DEVICE)
        d.kfree(self.m, hb)
        d.kfree(self.m, pb)

    # ---- RX ----
    def rx_poll(self) -> None:
        """One frame landed in the oldest buffer: sync it for the CPU, copy it out, give it back."""
        buf, h = self.rx_bufs.pop(0)
        n = self.readq(RX_DONE_LEN)
        if self.mistake == "wrong-direction":
            d.dma_sync_single_for_cpu(self.dev, h, RX_BUF_SIZE, d.DMA_TO_DEVICE)
        elif self.mistake != "missing-sync":
            d.dma_sync_single_for_cpu(self.dev, h, RX_BUF_SIZE, d.DMA_FROM_DEVICE)
        self.received.append(self.m.kernel.read(buf, n))
        d.dma_sync_single_for_device(self.dev, h, RX_BUF_SIZE, d.DMA_FROM_DEVICE)
        self.rx_bufs.append((buf, h))
        self._post(h)

    def remove(self) -> None:
        for buf, h in self.rx_bufs:
            d.dma_unmap_single(self.dev, h, RX_BUF_SIZE, d.DMA_FROM_DEVICE)
            d.kfree(self.m, buf)
        self.rx_bufs = []
        self.m.kernel.munmap(self.vma)
        self.dev.remove()


@dataclass
class Outcome:
    """What a run saw: frames sent vs what the device got, frames the wire
    delivered vs what the driver read, and the DMA-API debug report."""

    sent: list[bytes]
    device_got: list[bytes]
    delivered: list[bytes]
    driver_read: list[bytes]
    report: d.DmaDebugReport

    @property
    def correct(self) -> bool:
        return self.sent == self.device_got and self.delivered == self.driver_read


def traffic(drv: Driver, nic: Nic, rounds: int = 3) -> tuple[list[bytes], list[bytes]]:
    sent, delivered = [], []
    for i in range(rounds):
        sent.append(drv.xmit_small(f"small frame {i}".encode()))
        hdr, pay = f"HDR{i:02d}".encode(), bytes(range(i, i + 200))
        drv.xmit_sg(hdr, pay)
        sent.append(hdr + pay)
        for j in range(2):
            w = f"wire frame {i}.{j} ".encode() * 20
            nic.receive(w)
            delivered.append(w)
            drv.rx_poll()
    return sent, delivered


def run(platform: str, mistake: str | None = None, *, ram: int = 16 << 20) -> Outcome:
    """The driver on ``platform`` with at most one ``mistake``, audited in record mode."""
    if mistake is not None and mistake not in MISTAKES:
        raise ValueError(f"unknown mistake {mistake!r}; one of {', '.join(MISTAKES)}")
    with d.Machine(platform, ram=ram) as m:
        m.dma_debug_mode = "record"
        nic = Nic(m)
        drv = Driver(m, nic, mistake)
        sent, delivered = traffic(drv, nic)
        drv.remove()
        return Outcome(sent, nic.sent, delivered, drv.received, m.dma_debug_report())


if __name__ == "__main__":
    plat = sys.argv[1] if len(sys.argv) > 1 else "arm"
    what = sys.argv[2] if len(sys.argv) > 2 else None
    out = run(plat, what)
    print(f"{plat}, mistake={what}: {'correct' if out.correct else 'WRONG DATA'}")
    print(out.report.summary())
