"""The Python access paths: the register fast path (one cffi call returning the
value) keeps every error; readinto and write take any buffer; zero-copy views
exist exactly where the memory model allows them and pin their pages."""

from __future__ import annotations

import array
import gc
import threading

import pytest

import dmamap
from dmamap import PAGE_SIZE
from dmamap.errors import (
    AlignmentFault,
    CowFaultError,
    HandlerError,
    InvalidArgumentError,
    MachineClosedError,
    ProtectionFault,
    PteBusyError,
    SegmentationFault,
    ZeroCopyError,
)

np = pytest.importorskip("numpy")

READS = ("read8", "read16", "read32", "read64")
WRITES = ("write8", "write16", "write32", "write64")


def _ram(m: dmamap.Machine, mm: dmamap.AddressSpace, pages: int = 4, *, cache: str | None = None,
         prot: str = "rw") -> tuple[dmamap.Vma, dmamap.Page]:
    vma = mm.mmap(pages * PAGE_SIZE, prot=prot)
    page = m.alloc_pages(pages)
    pp = vma.vm_page_prot if cache is None else dmamap.PgProt.make(m.isa, write="w" in prot, cache=cache)
    dmamap.remap_pfn_range(vma, vma.start, page.pfn, pages * PAGE_SIZE, pp)
    return vma, page


# ---- register fast path ----

@pytest.mark.parametrize("platform", ["x86", "arm", "riscv"])
def test_every_width_round_trips(platform: str) -> None:
    with dmamap.Machine(platform, ram=16 << 20) as m:
        mm = m.new_address_space()
        vma, _ = _ram(m, mm)
        for i, (r, w) in enumerate(zip(READS, WRITES, strict=True)):
            size = 1 << i
            top = (1 << (8 * size)) - 1
            for value in (0, 1, top, top >> 1):
                getattr(mm, w)(vma.start + 8, value)
                assert getattr(mm, r)(vma.start + 8) == value
        mm.write64(vma.start, (1 << 64) - 1)   # the 8-byte read's failure sentinel, as a value
        assert mm.read64(vma.start) == (1 << 64) - 1
        assert mm.read(vma.start, 8) == b"\xff" * 8


def test_fast_path_errors_are_the_specific_classes() -> None:
    with dmamap.Machine("x86", ram=16 << 20) as m:
        mm = m.new_address_space()
        vma, _ = _ram(m, mm)
        ro, _ = _ram(m, mm, prot="r")
        for r in READS:
            with pytest.raises(SegmentationFault):
                getattr(mm, r)(vma.end + 16 * PAGE_SIZE)
            with pytest.raises(TypeError):
                getattr(mm, r)(True)
            with pytest.raises(TypeError):
                getattr(mm, r)(1.0)
            with pytest.raises(InvalidArgumentError):
                getattr(mm, r)(-1)
            with pytest.raises(InvalidArgumentError):
                getattr(mm, r)(1 << 64)
        for i, w in enumerate(WRITES):
            with pytest.raises(ProtectionFault):
                getattr(mm, w)(ro.start, 1)
            with pytest.raises(TypeError):
                getattr(mm, w)(vma.start, True)
            with pytest.raises(TypeError):
                getattr(mm, w)(True, 1)
            with pytest.raises(InvalidArgumentError):
                getattr(mm, w)(vma.start, 1 << (8 << i))
            with pytest.raises(InvalidArgumentError):
                getattr(mm, w)(vma.start, -1)
        assert mm.read64(vma.start) == 0   # nothing refused wrote anything
        mm.close()
        for r in READS:
            with pytest.raises(MachineClosedError):
                getattr(mm, r)(vma.start)
        for w in WRITES:
            with pytest.raises(MachineClosedError):
                getattr(mm, w)(vma.start, 1)


def test_tlb_hit_path_refuses_what_the_general_path_refuses() -> None:
    """Once the TLB holds the entry, read8 .. write64 are done by the C methods
    themselves (CpuAccess): every refusal still comes from the general path."""
    with dmamap.Machine("x86", ram=16 << 20) as m:
        mm = m.new_address_space()
        vma, _ = _ram(m, mm)
        ro, _ = _ram(m, mm, prot="r")
        for va in (vma.start, ro.start):
            mm.read64(va)                          # both entries in the TLB
        for i, w in enumerate(WRITES):
            with pytest.raises(ProtectionFault):
                getattr(mm, w)(ro.start, 1)        # a read-only TLB entry is no write hit
            with pytest.raises(InvalidArgumentError):
                getattr(mm, w)(vma.start, 1 << (8 << i))
            with pytest.raises(TypeError):
                getattr(mm, w)(vma.start, True)
            with pytest.raises(TypeError):
                getattr(mm, w)(vma.start)
        for r in READS:
            with pytest.raises(TypeError):
                getattr(mm, r)()
            with pytest.raises(TypeError):
                getattr(mm, r)(vma.start, 1)
        assert mm.read64(vma.start) == 0 and mm.read64(ro.start) == 0
        mm.write16(vma.start + 1, 0xBEEF)          # unaligned: the general path, same bytes
        assert mm.read(vma.start, 4) == b"\x00\xef\xbe\x00"
        m.close()
        for r in READS:
            with pytest.raises(MachineClosedError):
                getattr(mm, r)(vma.start)
        with pytest.raises(MachineClosedError):
            mm.write32(vma.start, 1)


@pytest.mark.parametrize("platform", ["x86", "arm", "sram"])
def test_tlb_hit_path_counts_as_the_general_path(platform: str) -> None:
    """The same accesses through the C methods and through the ordinary cffi call
    (``_read`` / ``_write``) give the same values and the same event counts."""
    def run(direct: bool) -> tuple[list[int], dmamap.AsStats]:
        with dmamap.Machine(platform, ram=16 << 20) as m:
            dev = m.add_device("d")
            buf = dmamap.dma_alloc_coherent(dev, 4 * PAGE_SIZE)
            mm = m.new_address_space()
            vma = mm.mmap(4 * PAGE_SIZE)
            dmamap.dma_mmap_coherent(dev, vma, *buf)
            out = []
            for k in range(64):
                va, size = vma.start + (k * 1544) % (4 * PAGE_SIZE - 8) // 8 * 8, 1 << (k % 4)
                if direct:
                    getattr(mm, f"write{8 * size}")(va, k)
                    out.append(getattr(mm, f"read{8 * size}")(va))
                else:
                    mm._write(va, k, size)
                    out.append(mm._read(va, size))
            return out, mm.stats
    fast, slow = run(True), run(False)
    assert fast == slow and fast[0] == list(range(64))


def test_fast_path_device_callbacks_and_their_exceptions() -> None:
    calls: list[tuple[int, int]] = []

    def read(off: int, size: int) -> int:
        if off == 0x40:
            raise KeyError("broken register")
        calls.append((off, size))
        return 0xFFFF_FFFF_FFFF_FFFF & ((1 << (8 * size)) - 1)

    with dmamap.Machine("arm", ram=16 << 20) as m:
        dev = m.add_device("regs", bars=[dmamap.Bar(PAGE_SIZE, read=read)])
        mm = m.new_address_space()
        vma = mm.mmap(PAGE_SIZE)
        dmamap.mmio_map(vma, dev.bar(0)[0], PAGE_SIZE)
        assert mm.read64(vma.start) == (1 << 64) - 1   # all-ones from a register is a value
        assert mm.read32(vma.start + 4) == 0xFFFF_FFFF
        assert calls == [(0, 8), (4, 4)]               # each access reached the device once
        with pytest.raises(HandlerError) as info:
            mm.read32(vma.start + 0x40)
        assert isinstance(info.value.__cause__, KeyError)
        with pytest.raises(HandlerError):
            mm.read64(vma.start + 0x40)
        assert mm.read32(vma.start + 8) == 0xFFFF_FFFF   # the stashed exception did not linger
        with pytest.raises(AlignmentFault):
            mm.read32(vma.start + 2)                   # Device memory on arm


def test_a_callback_exception_after_a_completed_access_still_raises() -> None:
    """An exception stashed while the core finished the access (a write
    callback that raises but whose access the core does not fail) raises at
    the access itself, not at some later call."""
    from dmamap._binding import stash

    def write(off: int, size: int, value: int) -> None:
        if value == 1:
            stash(RuntimeError("late"))   # what a callback's wrapper does with an exception it caught

    with dmamap.Machine("x86", ram=16 << 20) as m:
        dev = m.add_device("regs", bars=[dmamap.Bar(PAGE_SIZE, write=write)])
        mm = m.new_address_space()
        vma = mm.mmap(PAGE_SIZE)
        dmamap.mmio_map(vma, dev.bar(0)[0], PAGE_SIZE)
        with pytest.raises(HandlerError):
            mm.write32(vma.start, 1)
        mm.write32(vma.start, 2)   # nothing pending any more


def test_private_write_on_non_ram_is_cow_fault() -> None:
    with dmamap.Machine("x86", ram=16 << 20) as m:
        dev = m.add_device("regs", bars=[PAGE_SIZE])
        mm = m.new_address_space()
        vma = mm.mmap(PAGE_SIZE, shared=False)
        dmamap.remap_pfn_range(vma, vma.start, dev.bar(0)[0] >> 12, PAGE_SIZE,
                               dmamap.PgProt.make(m.isa, write=False, cache="UC"))
        with pytest.raises(CowFaultError):
            mm.write32(vma.start, 1)


def test_fast_path_threads_keep_their_own_errors() -> None:
    with dmamap.Machine("x86", ram=16 << 20) as m:
        mm = m.new_address_space()
        vma, _ = _ram(m, mm)
        bad: list[BaseException] = []

        def worker(fail: bool) -> None:
            try:
                for _ in range(2000):
                    if fail:
                        with pytest.raises(SegmentationFault):
                            mm.read32(vma.end + 64 * PAGE_SIZE)
                    else:
                        mm.write32(vma.start, 5)
                        assert mm.read32(vma.start) == 5
            except BaseException as exc:   # noqa: BLE001 - reported below
                bad.append(exc)

        ts = [threading.Thread(target=worker, args=(i % 2 == 0,)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not bad


# ---- readinto / write ----

@pytest.mark.parametrize("platform", ["x86", "arm", "sram", "riscv"])
def test_readinto_and_write_take_any_buffer(platform: str) -> None:
    with dmamap.Machine(platform, ram=16 << 20) as m:
        mm = m.new_address_space()
        vma, _ = _ram(m, mm)
        src = np.arange(vma.end - vma.start, dtype=np.uint8)[::1].reshape(4, -1)
        mm.write(vma.start, src)                                     # a 2-D numpy array
        mm.write(vma.start, array.array("I", [0xAABBCCDD]))         # an array.array
        assert mm.read32(vma.start) == 0xAABBCCDD
        out = np.zeros((vma.end - vma.start) // 4, dtype=np.uint32)
        assert mm.readinto(vma.start, out) == vma.end - vma.start
        assert out[0] == 0xAABBCCDD and out.view(np.uint8)[4:].tolist() == src.reshape(-1)[4:].tolist()
        ba = bytearray(10)
        assert mm.readinto(vma.start + 4, memoryview(ba)) == 10
        assert bytes(ba) == mm.read(vma.start + 4, 10)
        mm.write(vma.start, np.arange(8, dtype=np.uint8)[::2])       # non-contiguous: copied first
        assert mm.read(vma.start, 4) == bytes([0, 2, 4, 6])
        assert mm.readinto(vma.start, bytearray()) == 0
        with pytest.raises(TypeError):
            mm.readinto(vma.start, b"read-only")
        with pytest.raises(TypeError):
            mm.readinto(vma.start, np.zeros(8, np.uint8)[::2])     # not contiguous
        with pytest.raises(TypeError):
            mm.readinto(vma.start, "text")
        with pytest.raises(TypeError):
            mm.write(vma.start, "text")
        with pytest.raises(SegmentationFault):
            mm.readinto(vma.end - 4, bytearray(PAGE_SIZE << 5))   # runs off the VMA: refused first


def test_read_returns_exact_fresh_bytes() -> None:
    with dmamap.Machine("x86", ram=16 << 20) as m:
        mm = m.new_address_space()
        vma, _ = _ram(m, mm)
        mm.write(vma.start, b"\x01\x02\x03")
        one = mm.read(vma.start, 1)
        assert one == b"\x01" and type(one) is bytes
        assert b"\x01" == bytes([1])   # the shared 1-byte object was never filled in place
        a, b = mm.read(vma.start, 3), mm.read(vma.start, 3)
        assert a == b == b"\x01\x02\x03" and a is not b and type(a) is bytes
        assert len(mm.read(vma.start, 4 * PAGE_SIZE)) == 4 * PAGE_SIZE


# ---- zero-copy views ----

def test_view_is_the_memory_and_pins_it() -> None:
    with dmamap.Machine("x86", ram=16 << 20) as m:
        mm = m.new_address_space()
        vma, page = _ram(m, mm)
        mm.write32(vma.start + 8, 0x1234)
        v = mm.view(vma.start, 4 * PAGE_SIZE)
        a = np.frombuffer(v, dtype=np.uint32)
        assert a[2] == 0x1234
        a[3] = 77
        assert mm.read32(vma.start + 12) == 77
        assert page.refcount == 2                 # the allocation's reference and the pin
        with pytest.raises(PteBusyError):
            m.free_pages(page, 4)            # pinned: cannot be freed under the view
        mm.munmap(vma)                       # the view keeps showing the pages, as a GUP pin does
        assert a[3] == 77
        a[4] = 5
        assert m.phys_read(page.phys_addr + 16, 4) == (5).to_bytes(4, "little")
        del a
        v.release()                          # unpins
        assert page.refcount == 1
        m.free_pages(page, 4)


def test_view_released_by_garbage_collection() -> None:
    with dmamap.Machine("x86", ram=16 << 20) as m:
        mm = m.new_address_space()
        vma, page = _ram(m, mm, 1)
        a = np.frombuffer(mm.view(vma.start, PAGE_SIZE), dtype=np.uint8)
        with pytest.raises(PteBusyError):
            m.free_pages(page)
        del a
        gc.collect()
        mm.munmap(vma)
        m.free_pages(page)


def test_read_only_view_and_cow() -> None:
    with dmamap.Machine("x86", ram=16 << 20) as m:
        mm = m.new_address_space()
        ro, _ = _ram(m, mm, prot="r")
        v = mm.view(ro.start, PAGE_SIZE, write=False)
        assert v.readonly
        with pytest.raises(ProtectionFault):
            mm.view(ro.start, PAGE_SIZE)   # a writable view is a write access
        v.release()


def test_anonymous_page_unmapped_under_a_view_is_freed_with_it() -> None:
    """A writable view of a private mapping breaks copy-on-write (FOLL_WRITE):
    the view holds the anonymous copy; munmap leaves it to the pin, whose
    release frees it (unpin_user_pages dropping the last reference)."""
    with dmamap.Machine("x86", ram=16 << 20) as m:
        mm = m.new_address_space()
        page = m.alloc_pages()
        m.phys_write(page.phys_addr, b"orig")
        priv = mm.mmap(PAGE_SIZE, shared=False)
        dmamap.remap_pfn_range(priv, priv.start, page.pfn, PAGE_SIZE, priv.vm_page_prot)
        v = mm.view(priv.start, PAGE_SIZE)
        t = mm.translate(priv.start)
        assert t is not None and t.pa != page.phys_addr   # the COW copy
        anon = m.pfn_to_page(t.pa >> 12)
        assert anon.refcount == 2                          # its PTE and the pin
        assert bytes(v[:4]) == b"orig"
        v[:4] = b"copy"
        assert m.phys_read(page.phys_addr, 4) == b"orig"   # the original page untouched
        mm.munmap(priv)
        assert anon.refcount == 1                          # only the pin holds it
        assert bytes(v[:4]) == b"copy"
        used = m.stats.ram_pages_used
        v.release()
        assert m.stats.ram_pages_used == used - 1         # freed with the pin
        m.free_pages(page)


@pytest.mark.parametrize(("platform", "cache"), [("x86", "UC"), ("x86", "WC"), ("arm", None), ("riscv", None)])
def test_view_refused_where_the_model_emulates(platform: str, cache: str | None) -> None:
    with dmamap.Machine(platform, ram=16 << 20) as m:
        mm = m.new_address_space()
        vma, page = _ram(m, mm, 1, cache=cache)
        with pytest.raises(ZeroCopyError):
            mm.view(vma.start, PAGE_SIZE)
        assert page.refcount == 1                # refused: nothing pinned
        buf = bytearray(PAGE_SIZE)
        mm.write(vma.start, b"copy")
        mm.readinto(vma.start, buf)          # the copy-in/copy-out path works there
        assert buf[:4] == b"copy"


def test_view_refused_for_mmio_sram_and_discontiguous() -> None:
    with dmamap.Machine("x86", ram=16 << 20) as m:
        dev = m.add_device("regs", bars=[PAGE_SIZE])
        mm = m.new_address_space()
        io = mm.mmap(PAGE_SIZE)
        dmamap.mmio_map(io, dev.bar(0)[0], PAGE_SIZE)
        with pytest.raises(ZeroCopyError):
            mm.view(io.start, 4)
        two = mm.mmap(2 * PAGE_SIZE)
        a, b = m.alloc_pages(), m.alloc_pages()
        m.alloc_pages()
        c = m.alloc_pages()
        dmamap.remap_pfn_range(two, two.start, a.pfn, PAGE_SIZE, two.vm_page_prot)
        dmamap.remap_pfn_range(two, two.start + PAGE_SIZE, c.pfn, PAGE_SIZE, two.vm_page_prot)
        with pytest.raises(ZeroCopyError):
            mm.view(two.start, 2 * PAGE_SIZE)
        mm.view(two.start, PAGE_SIZE).release()   # each page alone is fine
        with pytest.raises(SegmentationFault):
            mm.view(two.end, PAGE_SIZE)
        with pytest.raises(InvalidArgumentError):
            mm.view(two.start, 0)
        m.free_pages(b)


def test_view_of_streaming_buffer_owned_by_the_device_is_refused() -> None:
    with dmamap.Machine("x86", ram=16 << 20) as m:
        dev = m.add_device("eng")
        buf = dmamap.dma_alloc_noncoherent(dev, PAGE_SIZE, dmamap.DMA_FROM_DEVICE)
        dmamap.dma_sync_single_for_device(dev, buf.dma_handle, PAGE_SIZE, dmamap.DMA_FROM_DEVICE)
        with pytest.raises(dmamap.DmaCpuOwnershipError):
            m.kernel.view(buf.cpu_addr, PAGE_SIZE)
        dmamap.dma_sync_single_for_cpu(dev, buf.dma_handle, PAGE_SIZE, dmamap.DMA_FROM_DEVICE)
        m.kernel.view(buf.cpu_addr, PAGE_SIZE).release()
        dmamap.dma_free_noncoherent(dev, PAGE_SIZE, buf.cpu_addr, buf.dma_handle, dmamap.DMA_FROM_DEVICE)


def test_view_after_machine_close_shows_zeroes() -> None:
    m = dmamap.Machine("x86", ram=16 << 20)
    mm = m.new_address_space()
    vma, _ = _ram(m, mm, 1)
    mm.write32(vma.start, 9)
    v = mm.view(vma.start, PAGE_SIZE)
    assert v[0] == 9
    m.close()
    assert v[0] == 0   # the host memory went back; the view stays readable
    v.release()


def test_bulk_access_moves_bytes_in_order_around_a_fault_callback() -> None:
    """A bulk read or write copies what it gathered before a fault handler runs
    (the handler sees the write's earlier pages written, and its changes to
    earlier pages do not show in the read): the order of a page-by-page access."""
    with dmamap.Machine("x86", ram=16 << 20) as m:
        mm = m.new_address_space()
        first, second = m.alloc_pages(), m.alloc_pages()
        seen: list[bytes] = []

        def handler(vmf: dmamap.VmFault) -> dmamap.Page:
            seen.append(m.phys_read(first.phys_addr, 4))
            m.phys_write(first.phys_addr, b"late")
            return second

        def fresh() -> dmamap.Vma:   # the first page mapped, the second left to the handler
            vma = mm.mmap(2 * PAGE_SIZE)
            dmamap.vm_insert_page(vma, vma.start, first)
            vma.set_fault_handler(handler)
            return vma

        vma = fresh()
        mm.write(vma.start, b"A" * (2 * PAGE_SIZE))
        assert seen == [b"AAAA"]                        # the first page was written before the fault
        assert m.phys_read(second.phys_addr, 4) == b"AAAA"
        for read in (lambda v: mm.read(v.start, 2 * PAGE_SIZE),
                     lambda v: bytes(out) if mm.readinto(v.start, out) else b""):
            out = bytearray(2 * PAGE_SIZE)
            vma = fresh()
            m.phys_write(first.phys_addr, b"old!")
            assert read(vma)[:4] == b"old!"            # copied before the handler changed it
            assert m.phys_read(first.phys_addr, 4) == b"late"


@pytest.mark.parametrize("write", [False, True])
def test_bulk_run_counts_as_page_by_page(write: bool) -> None:
    """A bulk access over many pages (its TLB misses answered by the walk cache inside
    the run) counts the same misses, walks and hits, and moves the same bytes, as the
    same pages accessed one call each."""
    def run(whole: bool) -> tuple[bytes, tuple[int, int, int]]:
        with dmamap.Machine("x86", ram=64 << 20) as m:
            mm = m.new_address_space()
            vma, _ = _ram(m, mm, pages=256)
            data = bytes(range(256)) * (256 * PAGE_SIZE // 256)
            mm.write(vma.start, data)
            mm.flush_tlb()
            before = mm.stats
            pages = [(vma.start, 256 * PAGE_SIZE)] if whole else \
                [(vma.start + i * PAGE_SIZE, PAGE_SIZE) for i in range(256)]
            out = b"".join(mm.read(va, n) if not write else (mm.write(va, data[va - vma.start:][:n]) or b"")
                           for va, n in pages)
            for _ in range(2):   # the TLB warm now: hits
                for va, n in pages:
                    mm.readinto(va, bytearray(n))
            after = mm.stats
            return out, tuple(getattr(after, k) - getattr(before, k) for k in ("tlb_misses", "page_walks", "tlb_hits"))
    whole, single = run(True), run(False)
    assert whole == single
    assert whole[1][0] == 256


def test_bulk_c_methods_raise_the_library_errors_and_leave_nothing_behind() -> None:
    """read, readinto and write are C methods calling the core once: what it refuses is
    raised as the library's error (a callback's exception as HandlerError, a closed space
    as MachineClosedError), arguments it cannot take go to the Python checks, and no
    error record or stashed exception outlives the call that raised it."""
    with dmamap.Machine("x86", ram=16 << 20) as m:
        mm = m.new_address_space()
        vma, _ = _ram(m, mm)
        mm.write(vma.start, b"ok")
        calls = (lambda va: mm.read(va, 8), lambda va: mm.readinto(va, bytearray(8)),
                 lambda va: mm.write(va, b"12345678"))
        for call in calls:
            with pytest.raises(SegmentationFault):
                call(vma.end)                        # nothing mapped there
            assert mm.read(vma.start, 2) == b"ok"    # the next call is unaffected
        for bad in (-1, 1 << 64, True, 1.5, "0"):
            with pytest.raises((InvalidArgumentError, TypeError)):
                mm.read(bad, 8)
            with pytest.raises((InvalidArgumentError, TypeError)):
                mm.readinto(bad, bytearray(8))
        with pytest.raises(InvalidArgumentError):
            mm.read(vma.start, -1)
        assert mm.read(vma.start, 0) == b"" and mm.read(vma.start, 1) == b"o"

        def handler(vmf: dmamap.VmFault) -> dmamap.Page:
            raise RuntimeError("driver bug")

        lazy = mm.mmap(PAGE_SIZE)
        lazy.set_fault_handler(handler)
        for call in calls:
            with pytest.raises(HandlerError, match="driver bug"):
                call(lazy.start)
            assert mm.read(vma.start, 2) == b"ok" and mm.read16(vma.start) == 0x6B6F
        mm.close()
        for call in calls:
            with pytest.raises(MachineClosedError):
                call(vma.start)


def test_view_refused_midway_takes_back_every_pin() -> None:
    """A view over pages of several reference-lock groups (64 pages each), one of
    them freed under a remap_pfn_range mapping (which holds no references): the
    pin is refused at that page and the references it took before are given back."""
    with dmamap.Machine("x86", ram=16 << 20) as m:
        mm = m.new_address_space()
        page = m.alloc_pages(200)
        vma = mm.mmap(200 * PAGE_SIZE)
        dmamap.remap_pfn_range(vma, vma.start, page.pfn, 200 * PAGE_SIZE, vma.page_prot)
        pages = [m.pfn_to_page(page.pfn + i) for i in range(200)]
        v = mm.view(vma.start, 200 * PAGE_SIZE)
        assert {p.refcount for p in pages} == {2}
        v.release()
        m.free_pages(pages[150], 50)
        with pytest.raises(ZeroCopyError, match="free page"):
            mm.view(vma.start, 200 * PAGE_SIZE)
        assert {p.refcount for p in pages[:150]} == {1} and {p.refcount for p in pages[150:]} == {0}
        v = mm.view(vma.start, 150 * PAGE_SIZE)   # the pages still allocated pin as before
        assert {p.refcount for p in pages[:150]} == {2}
        v.release()
        assert {p.refcount for p in pages[:150]} == {1}
