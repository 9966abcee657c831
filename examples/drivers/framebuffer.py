"""A write-combining framebuffer, both ways drivers do it:

* ``aperture``: the scanout memory is a BAR.  The kernel draws through
  ``ioremap_wc`` (fbcon); user space mmaps it with ``pgprot_writecombine`` +
  ``vm_iomap_memory`` (drivers/video/fbdev/core/fb_io_fops.c fb_io_mmap).
* ``dma``: the scanout memory is a ``dma_alloc_wc`` buffer the display engine
  reads by DMA; user space mmaps it with ``dma_mmap_wc`` (drm_gem_dma_mmap).

Either way the kernel and user mappings have one memory type.
Run it: ``python examples/drivers/framebuffer.py [platform] [aperture|dma]``.
"""

from __future__ import annotations

import sys

import dmamap
from dmamap import PAGE_SIZE

WIDTH, HEIGHT, BPP = 64, 48, 4
LINE = WIDTH * BPP
FB_BYTES = (LINE * HEIGHT + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
# display-controller registers (BAR 1)
REG_SCANOUT_LO, REG_SCANOUT_HI, REG_STRIDE, REG_ENABLE = 0x0, 0x4, 0x8, 0xC


class FbDriver:
    def __init__(self, machine: dmamap.Machine, dev: dmamap.Device, mode: str) -> None:
        self.m, self.dev, self.mode = machine, dev, mode
        self.ctrl = dmamap.ioremap(machine, *dev.bar(1))
        if mode == "aperture":
            self.fb_phys = dev.bar(0)[0]
            self.screen_base = dmamap.ioremap_wc(machine, self.fb_phys, FB_BYTES)   # info->screen_base
            self.buf = None
        else:
            self.buf = dmamap.dma_alloc_wc(dev, FB_BYTES)
            self.screen_base = None
            dmamap.writel(self.buf.dma_handle & 0xFFFFFFFF, self.ctrl + REG_SCANOUT_LO)
            dmamap.writel(self.buf.dma_handle >> 32, self.ctrl + REG_SCANOUT_HI)
        dmamap.writel(LINE, self.ctrl + REG_STRIDE)
        dmamap.writel(1, self.ctrl + REG_ENABLE)

    def fill_rect(self, x: int, y: int, w: int, h: int, color: int) -> None:
        """The kernel draws (fbcon's fillrect), one 32-bit pixel store at a time."""
        for row in range(y, y + h):
            for col in range(x, x + w):
                off = row * LINE + col * BPP
                if self.screen_base is not None:
                    dmamap.writel(color, self.screen_base + off)
                else:
                    assert self.buf is not None
                    self.m.kernel.write32(self.buf.cpu_addr + off, color)

    def mmap(self, vma: dmamap.Vma) -> None:
        if self.mode == "aperture":
            vma.vm_page_prot = dmamap.pgprot_writecombine(vma.vm_page_prot)
            dmamap.vm_iomap_memory(vma, self.fb_phys, FB_BYTES)
        else:
            assert self.buf is not None
            dmamap.dma_mmap_wc(self.dev, vma, *self.buf)

    def kernel_alias(self) -> int:
        return int(self.screen_base) if self.screen_base is not None else int(self.buf.cpu_addr)  # type: ignore[union-attr]

    def scanout(self) -> bytes:
        """What the display engine sends to the panel: VRAM, or DMA reads of the buffer."""
        if self.buf is None:
            return self.m.kernel.read(self.kernel_alias(), LINE * HEIGHT)
        return self.dev.dma_read(self.buf.dma_handle, LINE * HEIGHT)

    def remove(self) -> None:
        dmamap.writel(0, self.ctrl + REG_ENABLE)
        if self.screen_base is not None:
            dmamap.iounmap(self.screen_base)
        if self.buf is not None:
            dmamap.dma_free_wc(self.dev, FB_BYTES, self.buf.cpu_addr, self.buf.dma_handle)
        dmamap.iounmap(self.ctrl)


def main(platform: str = "x86", mode: str = "aperture") -> dict[str, object]:
    if mode not in ("aperture", "dma"):
        raise SystemExit(f"mode must be 'aperture' or 'dma', not {mode!r}")
    with dmamap.Machine(platform, ram=32 << 20) as m:
        dev = m.add_device("fb", bars=[FB_BYTES, PAGE_SIZE])
        drv = FbDriver(m, dev, mode)
        drv.fill_rect(0, 0, WIDTH, 4, 0xFF0000FF)              # a console bar, drawn by the kernel
        mm = m.new_address_space()
        vma = mm.mmap(FB_BYTES)
        drv.mmap(vma)
        for y in range(10, 20):                               # user space blits a sprite, row by row
            mm.write(vma.start + y * LINE + 8 * BPP, (0x00FF00FF).to_bytes(4, "little") * 16)
        frame = drv.scanout()
        px = lambda x, y: int.from_bytes(frame[y * LINE + x * BPP:][:4], "little")  # noqa: E731
        assert px(5, 2) == 0xFF0000FF and px(8, 10) == 0x00FF00FF and px(23, 19) == 0x00FF00FF
        assert px(24, 19) == 0 and px(8, 20) == 0
        user_cache = mm.translate(vma.start).cache
        kernel_cache = m.kernel.translate(drv.kernel_alias()).cache
        assert user_cache == kernel_cache, (user_cache, kernel_cache)
        assert m.attribute_reports == []
        mm.munmap(vma)
        drv.remove()
        return {"platform": platform, "mode": mode, "user_cache": user_cache, "kernel_cache": kernel_cache}


if __name__ == "__main__":
    print(main(*sys.argv[1:3]))
