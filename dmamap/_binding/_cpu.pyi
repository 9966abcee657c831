"""Type stub of the register-access extension (dmamap/_binding/_cpu.c)."""

class CpuAccess:
    """Register accesses through the MMU, in C (the base class of AddressSpace)."""

    def read8(self, va: int, /) -> int:
        """Load 8 bits at ``va`` through the MMU, as the CPU does."""
    def read16(self, va: int, /) -> int:
        """Load 16 bits at ``va`` through the MMU, as the CPU does."""
    def read32(self, va: int, /) -> int:
        """Load 32 bits at ``va`` through the MMU, as the CPU does."""
    def read64(self, va: int, /) -> int:
        """Load 64 bits at ``va`` through the MMU, as the CPU does."""
    def write8(self, va: int, value: int, /) -> None:
        """Store the 8-bit ``value`` at ``va`` through the MMU, as the CPU does."""
    def write16(self, va: int, value: int, /) -> None:
        """Store the 16-bit ``value`` at ``va`` through the MMU, as the CPU does."""
    def write32(self, va: int, value: int, /) -> None:
        """Store the 32-bit ``value`` at ``va`` through the MMU, as the CPU does."""
    def write64(self, va: int, value: int, /) -> None:
        """Store the 64-bit ``value`` at ``va`` through the MMU, as the CPU does."""
    def _bulk_read(self, va: int, n: int, /) -> bytes: ...
    def _bulk_readinto(self, va: int, buf: object, /) -> int: ...
    def _bulk_write(self, va: int, data: object, /) -> None: ...
    def _bind_cpu(self, address: int, /) -> None: ...

def bind_core(address: int, /) -> None: ...
def bind_bulk(address: int, max_host_buffer: int, /) -> None: ...
def fresh_bytes(n: int, /) -> bytes: ...
