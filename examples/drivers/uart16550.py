"""A 16550 UART at the PC's COM1 ports (0x3f8-0x3ff): the kernel driver
takes the receive interrupt (IRQ 4) and drains the FIFO with port reads
(``ioport_map`` + ``ioread8``);
user space drives the same registers through ``pio_map`` (trapped port
space on x86, the memory-mapped I/O window elsewhere) to set the line and
transmit.

Run it: ``python examples/drivers/uart16550.py [platform]``.
"""

from __future__ import annotations

import sys
from collections import deque

import dmamap

COM1, NPORTS, IRQ_LINE = 0x3F8, 8, 4
# register offsets (include/uapi/linux/serial_reg.h)
UART_RX = UART_TX = UART_DLL = 0
UART_IER = UART_DLM = 1
UART_IIR = 2
UART_LCR = 3
UART_LSR = 5
UART_IER_RDI = 0x01          # receive-data interrupt enable
UART_IIR_NO_INT = 0x01
UART_IIR_RDI = 0x04
UART_LCR_DLAB = 0x80
UART_LCR_WLEN8 = 0x03
UART_LSR_DR = 0x01
UART_LSR_THRE = 0x20
UART_LSR_TEMT = 0x40


class Uart16550:
    """The chip: registers, a receive FIFO and the wire it transmits to."""

    def __init__(self) -> None:
        self.ier = self.lcr = self.dll = self.dlm = 0
        self.rx: deque[int] = deque()
        self.wire_out = bytearray()
        self.dev: dmamap.Device | None = None

    def _iir(self) -> int:
        return UART_IIR_RDI if self.rx and self.ier & UART_IER_RDI else UART_IIR_NO_INT

    def read(self, off: int, size: int) -> int:
        dlab = self.lcr & UART_LCR_DLAB
        if off == UART_RX:
            return self.dll if dlab else (self.rx.popleft() if self.rx else 0)
        if off == UART_IER:
            return self.dlm if dlab else self.ier
        if off == UART_IIR:
            return self._iir()
        if off == UART_LCR:
            return self.lcr
        if off == UART_LSR:
            return UART_LSR_THRE | UART_LSR_TEMT | (UART_LSR_DR if self.rx else 0)
        return 0xFF

    def write(self, off: int, size: int, value: int) -> None:
        dlab = self.lcr & UART_LCR_DLAB
        if off == UART_TX:
            if dlab:
                self.dll = value
            else:
                self.wire_out.append(value)
        elif off == UART_IER:
            if dlab:
                self.dlm = value
            else:
                self.ier = value & 0x0F
        elif off == UART_LCR:
            self.lcr = value

    def wire_in(self, data: bytes) -> None:
        """Bytes arrive on RX: into the FIFO, and an interrupt if enabled."""
        assert self.dev is not None
        self.rx.extend(data)
        if self.ier & UART_IER_RDI:
            self.dev.raise_irq()


class SerialDriver:
    """The kernel side (8250 core, reduced): the IRQ handler drains RBR into the tty buffer."""

    def __init__(self, machine: dmamap.Machine) -> None:
        self.m = machine
        self.tty = bytearray()
        self.base = dmamap.ioport_map(machine, COM1, NPORTS)   # port I/O through the iomap cookie
        dmamap.request_irq(machine, IRQ_LINE, self.interrupt, dmamap.IRQF_SHARED, "serial", self)
        dmamap.iowrite8(UART_IER_RDI, self.base + UART_IER)     # an outb

    def interrupt(self, irq: int, dev_id: object) -> int:
        if dmamap.ioread8(self.base + UART_IIR) & UART_IIR_NO_INT:
            return dmamap.IRQ_NONE
        while dmamap.ioread8(self.base + UART_LSR) & UART_LSR_DR:
            self.tty.append(dmamap.ioread8(self.base + UART_RX))   # an inb
        return dmamap.IRQ_HANDLED

    def remove(self) -> None:
        dmamap.iowrite8(0, self.base + UART_IER)
        dmamap.free_irq(self.m, IRQ_LINE, self)
        dmamap.ioport_unmap(self.base)


def main(platform: str = "x86") -> dict[str, object]:
    with dmamap.Machine(platform, ram=16 << 20) as m:
        chip = Uart16550()
        dev = dmamap.Device(m, "serial8250", ports=[dmamap.PortRange(COM1, NPORTS, read=chip.read, write=chip.write)],
                           irqs=[IRQ_LINE])
        chip.dev = dev
        drv = SerialDriver(m)

        mm = m.new_address_space()
        regs = mm.mmap(dmamap.PAGE_SIZE)
        dmamap.pio_map(regs, COM1, NPORTS)
        # user space sets 115200 8N1: divisor 1 behind DLAB
        mm.write8(regs.start + UART_LCR, UART_LCR_DLAB)
        mm.write8(regs.start + UART_DLL, 1)
        mm.write8(regs.start + UART_DLM, 0)
        mm.write8(regs.start + UART_LCR, UART_LCR_WLEN8)
        assert (chip.dll, chip.dlm, chip.lcr) == (1, 0, UART_LCR_WLEN8)
        for ch in b"AT\r\n":                                   # transmit, polling THRE
            while not mm.read8(regs.start + UART_LSR) & UART_LSR_THRE:
                pass
            mm.write8(regs.start + UART_TX, ch)
        chip.wire_in(b"OK\r\n")                                # the modem answers: one interrupt
        chip.wire_in(b"RING")
        assert bytes(chip.wire_out) == b"AT\r\n"
        assert bytes(drv.tty) == b"OK\r\nRING"
        assert mm.read8(regs.start + UART_IIR) == UART_IIR_NO_INT   # FIFO drained, nothing pending
        stats = dmamap.irq_stats(m, IRQ_LINE)
        assert stats.handled == 2 and stats.unhandled == 0
        try:
            mm.read8(regs.start + NPORTS)                      # past the mapped ports
        except (dmamap.AddressRangeError, dmamap.UnclaimedIOError, dmamap.AccessFault) as e:
            past = type(e).__name__
        else:
            past = "no error"
        mm.munmap(regs)
        drv.remove()
        return {"platform": platform, "tx": bytes(chip.wire_out), "rx": bytes(drv.tty), "irqs": stats.handled,
                "past_the_ports": past}


if __name__ == "__main__":
    print(main(*sys.argv[1:2]))
