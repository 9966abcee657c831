"""An ALSA-style PCM playback driver: one device file whose mmap hands out
the DMA data buffer, the status page and the control page by offset
(SNDRV_PCM_MMAP_OFFSET_DATA/STATUS/CONTROL), and a period interrupt that
advances the hardware pointer user space reads from the status page.

Run it: ``python examples/drivers/pcm.py [platform]``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE, DeviceFile

# include/uapi/sound/asound.h
SNDRV_PCM_MMAP_OFFSET_DATA = 0x00000000
SNDRV_PCM_MMAP_OFFSET_STATUS = 0x80000000
SNDRV_PCM_MMAP_OFFSET_CONTROL = 0x81000000

PERIOD_BYTES = PAGE_SIZE
PERIODS = 4
BUFFER_BYTES = PERIOD_BYTES * PERIODS
IRQ_LINE = 10

# The codec's registers (BAR 0).
REG_BUF_LO, REG_BUF_HI, REG_PERIOD, REG_CTRL, REG_HWPTR, REG_INT_STATUS = 0x00, 0x04, 0x08, 0x0C, 0x10, 0x14
CTRL_RUN = 1

# struct snd_pcm_mmap_status / snd_pcm_mmap_control, reduced to the two pointers.
STATUS_HW_PTR = 0x8
CONTROL_APPL_PTR = 0x0

@dataclass
class Codec:
    """The hardware: a DMA engine that plays one period per tick and interrupts."""

    regs: dict[int, int] = field(default_factory=lambda: dict.fromkeys(range(0, 0x18, 4), 0))
    played: bytearray = field(default_factory=bytearray)
    dev: dmamap.Device | None = None

    def read(self, off: int, size: int) -> int:
        value = self.regs.get(off & ~3, 0)
        if off == REG_INT_STATUS:
            self.regs[REG_INT_STATUS] = 0   # read to clear
        return value

    def write(self, off: int, size: int, value: int) -> None:
        self.regs[off & ~3] = value

    def tick(self) -> None:
        """One period's worth of time: DMA a period to the DAC, move the pointer, interrupt."""
        assert self.dev is not None
        if not self.regs[REG_CTRL] & CTRL_RUN:
            return
        base = self.regs[REG_BUF_LO] | self.regs[REG_BUF_HI] << 32
        hw = self.regs[REG_HWPTR]
        self.played += self.dev.dma_read(base + hw, self.regs[REG_PERIOD])
        self.regs[REG_HWPTR] = (hw + self.regs[REG_PERIOD]) % BUFFER_BYTES
        self.regs[REG_INT_STATUS] = 1
        self.dev.raise_irq()


class PcmDriver:
    """The kernel driver: probe, the device file's mmap, trigger and the IRQ handler."""

    def __init__(self, machine: dmamap.Machine, dev: dmamap.Device) -> None:
        self.m, self.dev = machine, dev
        self.regs = dmamap.ioremap(machine, *dev.bar(0))
        self.buf = dmamap.dma_alloc_coherent(dev, BUFFER_BYTES)   # snd_pcm_lib_preallocate_pages
        self.status = machine.alloc_pages(1)                       # runtime->status
        self.control = machine.alloc_pages(1)                      # runtime->control
        self.hw_ptr = 0            # frames played, in bytes, never wrapping (runtime->status->hw_ptr)
        self.periods_elapsed = 0
        dmamap.request_irq(machine, IRQ_LINE, self.interrupt, dmamap.IRQF_SHARED, "pcm", self)

    # -- file operations --
    def mmap(self, file: DeviceFile, vma: dmamap.Vma) -> None:
        """snd_pcm_mmap: dispatch on the mmap offset (vma->vm_pgoff << PAGE_SHIFT)."""
        offset = vma.vm_pgoff << PAGE_SHIFT
        if offset == SNDRV_PCM_MMAP_OFFSET_STATUS:
            dmamap.vm_insert_pages(vma, vma.start, [self.status])
        elif offset == SNDRV_PCM_MMAP_OFFSET_CONTROL:
            dmamap.vm_insert_pages(vma, vma.start, [self.control])
        elif offset == SNDRV_PCM_MMAP_OFFSET_DATA:
            dmamap.dma_mmap_coherent(self.dev, vma, *self.buf)   # snd_pcm_lib_default_mmap
        else:
            raise dmamap.InvalidArgumentError(f"pcm: no mapping at offset {offset:#x} (-EINVAL)")

    def trigger_start(self) -> None:
        """SNDRV_PCM_TRIGGER_START: program the engine and run."""
        dmamap.writel(self.buf.dma_handle & 0xFFFFFFFF, self.regs + REG_BUF_LO)
        dmamap.writel(self.buf.dma_handle >> 32, self.regs + REG_BUF_HI)
        dmamap.writel(PERIOD_BYTES, self.regs + REG_PERIOD)
        dmamap.writel(CTRL_RUN, self.regs + REG_CTRL)

    def trigger_stop(self) -> None:
        dmamap.writel(0, self.regs + REG_CTRL)

    # -- interrupt --
    def interrupt(self, irq: int, dev_id: object) -> int:
        if not dmamap.readl(self.regs + REG_INT_STATUS):
            return dmamap.IRQ_NONE                    # not ours (the line is shared)
        pos = dmamap.readl(self.regs + REG_HWPTR)     # the .pointer callback
        self.hw_ptr += (pos - self.hw_ptr) % BUFFER_BYTES
        self.periods_elapsed += 1                      # snd_pcm_period_elapsed
        self.m.kernel.write64(self.m.page_address(self.status) + STATUS_HW_PTR, self.hw_ptr)
        return dmamap.IRQ_HANDLED

    def remove(self) -> None:
        self.trigger_stop()
        dmamap.free_irq(self.m, IRQ_LINE, self)
        dmamap.dma_free_coherent(self.dev, BUFFER_BYTES, self.buf.cpu_addr, self.buf.dma_handle)
        self.m.free_pages(self.status)
        self.m.free_pages(self.control)
        dmamap.iounmap(self.regs)


def main(platform: str = "x86") -> dict[str, object]:
    """Play 2.5 buffers of a ramp through the mmapped ring; returns what was checked."""
    with dmamap.Machine(platform, ram=32 << 20) as m:
        codec = Codec()
        dev = dmamap.Device(m, "pcm", bars=[dmamap.Bar(PAGE_SIZE, read=codec.read, write=codec.write)],
                           irqs=[IRQ_LINE])
        codec.dev = dev
        drv = PcmDriver(m, dev)

        # user space: three mmaps of one device file, told apart by offset
        pcm_file = DeviceFile(dev, mmap=drv.mmap)
        mm = m.new_address_space()
        data = pcm_file.mmap(mm, BUFFER_BYTES, offset=SNDRV_PCM_MMAP_OFFSET_DATA)
        status = pcm_file.mmap(mm, PAGE_SIZE, offset=SNDRV_PCM_MMAP_OFFSET_STATUS, prot="r")
        control = pcm_file.mmap(mm, PAGE_SIZE, offset=SNDRV_PCM_MMAP_OFFSET_CONTROL)
        try:
            pcm_file.mmap(mm, PAGE_SIZE, offset=0x1000_0000)   # no such object: the driver refuses
        except dmamap.InvalidArgumentError:
            pass
        else:
            raise AssertionError("an unknown mmap offset was accepted")

        total = BUFFER_BYTES * 5 // 2
        stream = bytes(i * 7 & 0xFF for i in range(total))
        appl = 0
        # prefill the whole ring, then start; refill each period as the hardware frees it
        mm.write(data.start, stream[:BUFFER_BYTES])
        appl = BUFFER_BYTES
        mm.write64(control.start + CONTROL_APPL_PTR, appl)
        drv.trigger_start()
        seen_hw = []
        while len(codec.played) < total:
            codec.tick()
            hw = mm.read64(status.start + STATUS_HW_PTR)   # what snd_pcm_avail computes from
            seen_hw.append(hw)
            while appl < min(hw + BUFFER_BYTES, total):
                chunk = stream[appl:appl + PERIOD_BYTES]
                mm.write(data.start + appl % BUFFER_BYTES, chunk)
                appl += len(chunk)
                mm.write64(control.start + CONTROL_APPL_PTR, appl)
        drv.trigger_stop()
        assert bytes(codec.played[:total]) == stream, "the DAC played what user space wrote"
        assert seen_hw == [PERIOD_BYTES * (i + 1) for i in range(len(seen_hw))]
        assert drv.periods_elapsed == total // PERIOD_BYTES
        stats = dmamap.irq_stats(m, IRQ_LINE)
        result = {"platform": platform, "periods": drv.periods_elapsed, "irqs": stats.count,
                  "data_cache": mm.translate(data.start).cache, "status_cache": mm.translate(status.start).cache,
                  "attribute_reports": len(m.attribute_reports), "page_shift": PAGE_SHIFT}
        for v in (data, status, control):
            mm.munmap(v)
        drv.remove()
        return result


if __name__ == "__main__":
    print(main(*sys.argv[1:2]))
