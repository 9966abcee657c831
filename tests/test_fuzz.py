"""Fuzzing: random call sequences with hostile arguments at the public API and
at the C entry points.

Any exception other than a DmamapError or TypeError fails, as does a crash or a
hang (pytest-timeout).  A refused mapping operation must leave the raw page
tables and the page accounting exactly as they were, and at the end the page
tables, the page descriptors and the counters must agree with each other, and
unmapping and freeing everything must return every page.

The run is short by default (a few seconds per test); set
``DMAMAP_FUZZ_EXAMPLES`` to run more examples, e.g. ``DMAMAP_FUZZ_EXAMPLES=2000``
(about ten minutes on one core).  The cheap tests run a fixed multiple of it, so
each test costs about the same; the timeout grows with it.
"""

from __future__ import annotations

import enum
import os
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, rule

import dmamap
from dmamap import PAGE_SIZE, DmamapError
from dmamap._binding import ffi, lib
from dmamap.testing.pagetable import decoder_for, present_leaves, snapshot, table_pages

EXAMPLES = int(os.environ.get("DMAMAP_FUZZ_EXAMPLES", "50"))
STEPS = int(os.environ.get("DMAMAP_FUZZ_STEPS", "40"))
SETTINGS = settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))
ALLOWED = (DmamapError, TypeError)
#: Seconds per unit of DMAMAP_FUZZ_EXAMPLES that any one test may take: the most
#: expensive one needs about 0.13 s per unit on an idle core; this leaves a margin
#: for a loaded machine (pytest.ini's 300 s stays the floor).
SECONDS_PER_EXAMPLE = 0.5
pytestmark = pytest.mark.timeout(max(300, int(EXAMPLES * SECONDS_PER_EXAMPLE)))
U64 = 1 << 64

# ---- hostile values ----

EDGES = [0, 1, 2, 3, 7, 8, 63, 64, 511, 512, 4095, 4096, 4097, 8191, 8192, 0xFFFF, 0x10000, (1 << 21) - PAGE_SIZE,
         1 << 21, (1 << 21) + PAGE_SIZE, 1 << 30, 1 << 36, 1 << 39, 1 << 47, 1 << 48, 1 << 52, (1 << 63) - 1, 1 << 63,
         U64 - PAGE_SIZE, U64 - 1, U64, U64 + PAGE_SIZE, 1 << 100, -1, -2, -PAGE_SIZE, -(1 << 63), -(1 << 64)]
NOT_INTS = [None, "4096", 4096.5, b"\x10", [4096], (1, 2), object(), True]


def ints(*near: int) -> st.SearchStrategy[Any]:
    """Mostly integers (edges, small, huge, negative, near interesting addresses), sometimes not ints."""
    choices: list[st.SearchStrategy[Any]] = [
        st.sampled_from(EDGES),
        st.integers(0, 1 << 20),
        st.integers(-(1 << 70), 1 << 70),
        st.integers(0, 64).map(lambda n: n * PAGE_SIZE),
    ]
    if near:
        choices += [st.sampled_from(near), st.tuples(st.sampled_from(near), st.integers(-3, 3)).map(
            lambda t: t[0] + t[1] * PAGE_SIZE), st.tuples(st.sampled_from(near), st.integers(-64, 64)).map(
            lambda t: t[0] + t[1])]
    return st.one_of(*choices, st.sampled_from(NOT_INTS))


def sizes(*near: int) -> st.SearchStrategy[Any]:
    """Access lengths: small, edges that must fail fast, hostile types -- never gigabytes of real work."""
    return st.one_of(st.integers(0, 3 * PAGE_SIZE), st.sampled_from([-1, 1 << 40, U64 - 1, U64, 1 << 100]),
                     st.sampled_from(near) if near else st.just(8), st.sampled_from(NOT_INTS))


def data_bytes() -> st.SearchStrategy[Any]:
    return st.one_of(st.binary(max_size=2 * PAGE_SIZE), st.binary(max_size=16).map(bytearray),
                     st.binary(max_size=64).map(lambda b: memoryview(b)[::2]), st.sampled_from(["str", 5, None]))


def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one API call; only dmamap errors and TypeError may come out."""
    try:
        return fn(*args, **kwargs)
    except ALLOWED as e:
        note(f"  -> {type(e).__name__}: {e}")
        return e


# ---- whole-machine consistency ----

def raw_tables(m: dmamap.Machine, spaces: list[dmamap.AddressSpace]) -> list[dict[int, bytes]]:
    return [snapshot(m, s.root) for s in spaces if not s.closed]


def check_consistency(m: dmamap.Machine, spaces: list[dmamap.AddressSpace]) -> None:
    """Page tables, page descriptors and counters agree."""
    live = [s for s in spaces if not s.closed]
    ms = m.stats
    info = ffi.new("struct dmamap_page_info *")
    all_tables: set[int] = set()
    for s in live:
        pages = table_pages(m, s.root, kernel=s.kernel)
        assert len(pages) == len(set(pages)), "a table page is reachable twice"
        assert not all_tables & set(pages), "two address spaces share a table page"
        all_tables |= set(pages)
        assert s.stats.table_pages == len(pages), (s, s.stats.table_pages, len(pages))
        levels = 4 if m.isa == "x86_64" else 3
        for pa in pages:
            assert lib.dmamap_page_info(m._ptr(), pa >> 12, info, ffi.NULL) == 0
            assert info.flags & 4, f"table page {pa:#x} is not marked as a table"
            entries = struct.unpack("<512Q", m.phys_read(pa, PAGE_SIZE))
            if pa == pages[0] and not s.kernel:   # a user root's kernel half is the kernel's, not counted
                entries = entries[:decoder_for(m).user_entries]
            assert info.table_used == sum(1 for e in entries if e), f"table {pa:#x}: table_used is off"
        del levels
    assert ms.table_pages == len(all_tables), (ms.table_pages, len(all_tables))
    assert ms.ram_pages_used <= ms.ram_pages
    # every present user leaf lies inside a live VMA of its address space
    for s in live:
        if s.kernel:
            continue
        spans = [(v.start, v.end) for v in s.vmas]
        for va, leaf in _leaves(m, s):
            assert any(lo <= va and va + leaf < hi + 1 for lo, hi in spans), f"PTE at {va:#x} outside any VMA"


def _leaves(m: dmamap.Machine, s: dmamap.AddressSpace) -> list[tuple[int, int]]:
    """(va, page size) of every non-empty leaf entry the space owns, from the raw tables."""
    return [(va, size) for va, size, _ in present_leaves(m, s.root, kernel=s.kernel)]


# ---- the API state machine ----

PLATFORMS = ["x86", "arm", "sram", "x86_64", "aarch64"]


class ApiFuzz(RuleBasedStateMachine):
    vmas = Bundle("vmas")
    bufs = Bundle("bufs")
    sgs = Bundle("sgs")
    pages = Bundle("pages")

    @initialize(platform=st.sampled_from(PLATFORMS), ram=st.sampled_from([64 << 10, 256 << 10, 1 << 20, 4 << 20]))
    def setup(self, platform: str, ram: int) -> None:
        self.m = dmamap.Machine(platform, ram=ram, **({"sram": 64 << 10} if platform == "sram" else {}))
        self.other = dmamap.Machine("x86_64", ram=64 << 10)
        self.base_used = self.m.stats.ram_pages_used
        self.base_kernel = snapshot(self.m, self.m.kernel.root)
        self.spaces = [self.m.kernel, self.m.new_address_space()]
        self.devs = [self.m.add_device("d0", bars=[PAGE_SIZE, 0x3000], ports=[(0x300, 32)]),
                     self.m.add_device("d1", bars=[dmamap.Bar(PAGE_SIZE, read=self._dev_read)],
                                       ports=[dmamap.PortRange(0x400, 8, read=self._dev_read)])]
        self.reads = 0
        self.made_vmas: list[dmamap.Vma] = []
        self.live_bufs: list[tuple[Any, dmamap.DmaBuffer]] = []
        self.live_sgs: list[tuple[Any, dmamap.SgTable]] = []
        self.live_pages: list[tuple[dmamap.Page, int]] = []
        note(f"Machine({platform!r}, ram={ram:#x})")

    def teardown(self) -> None:
        if not hasattr(self, "m"):
            return
        try:
            if not self.m.closed:
                check_consistency(self.m, self.spaces)
                self._release_everything()
        finally:
            self.m.close()
            self.other.close()

    def _dev_read(self, offset: int, size: int) -> Any:
        self.reads += 1
        kind = self.reads % 5
        if kind == 3:
            raise RuntimeError("device register read failed")
        if kind == 4:
            return "garbage"
        return (offset * 0x01010101 + self.reads) & 0xFFFF_FFFF_FFFF_FFFF

    def _near(self) -> list[int]:
        out = [self.m.ram_base, self.m.ram_base + self.m.ram_size, self.m.page_offset, self.m.sram_base,
               self.devs[0].bar(0)[0], self.devs[0].bar(1)[0], self.devs[1].bar(0)[0]]
        for s in self.spaces:
            if not s.closed:
                out += [v.start for v in s.vmas[:8]] + [v.end for v in s.vmas[:8]]
        return out

    def _pfns(self) -> list[int]:
        return [x >> 12 for x in self._near()] + [p.pfn for p, _ in self.live_pages]

    def _space(self, i: int) -> dmamap.AddressSpace:
        return self.spaces[i % len(self.spaces)]

    def _atomic(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A mapping operation: if it is refused, page tables and page accounting are untouched."""
        before = (raw_tables(self.m, self.spaces), self.m.stats.ram_pages_used, self.m.stats.table_pages)
        r = call(fn, *args, **kwargs)
        if isinstance(r, BaseException) and not self.m.closed:
            after = (raw_tables(self.m, self.spaces), self.m.stats.ram_pages_used, self.m.stats.table_pages)
            assert after == before, f"refused {getattr(fn, '__name__', fn)} changed the page tables ({r!r})"
        return r

    # -- address spaces and VMAs --
    @rule(target=vmas, i=st.integers(0, 7), data=st.data(), prot=st.sampled_from(["rw", "r", "", "rwx", "w", 7]),
          shared=st.booleans())
    def mmap(self, i: int, data: st.DataObject, prot: Any, shared: bool) -> Any:
        s = self._space(i)
        length = data.draw(st.one_of(st.integers(1, 8).map(lambda n: n * PAGE_SIZE), ints(1 << 21)), "length")
        kw: dict[str, Any] = {"prot": prot, "shared": shared}
        if data.draw(st.booleans(), "fixed"):
            kw["addr"] = data.draw(ints(*self._near()), "addr")
        if data.draw(st.integers(0, 4), "odd") == 0:
            kw["align"] = data.draw(ints(), "align")
        if data.draw(st.integers(0, 4), "flags?") == 0:
            kw["flags"] = data.draw(ints(0x400, 0x4000, 0x10000000, 0x10000400), "flags")
        r = self._atomic(s.mmap, length, **kw)
        if isinstance(r, dmamap.Vma):
            self.made_vmas.append(r)
            return r
        return None

    @rule(vma=consumes(vmas))
    def munmap(self, vma: Any) -> None:
        if vma is not None:
            self._atomic(vma.mm.munmap, vma)

    @rule(vma=vmas, i=st.integers(0, 7))
    def munmap_elsewhere(self, vma: Any, i: int) -> None:
        if vma is not None:
            self._atomic(self._space(i).munmap, vma)

    @rule()
    def new_space(self) -> None:
        if len(self.spaces) < 5:
            s = call(self.m.new_address_space)
            if isinstance(s, dmamap.AddressSpace):
                self.spaces.append(s)

    @rule(i=st.integers(1, 7))
    def close_space(self, i: int) -> None:
        if len(self.spaces) > 2:
            s = self.spaces.pop(1 + i % (len(self.spaces) - 1))
            s.close()
            assert s.closed

    # -- accesses --
    @rule(i=st.integers(0, 7), data=st.data())
    def read(self, i: int, data: st.DataObject) -> None:
        s = self._space(i)
        va, n = data.draw(ints(*self._near()), "va"), data.draw(sizes(), "n")
        r = call(s.read, va, n)
        if isinstance(r, bytes):
            assert len(r) == n

    def _hits_tables(self, s: dmamap.AddressSpace, va: Any, n: int) -> bool:
        """Whether a write of n bytes at va would land in a page table (through the
        kernel's direct map or a PFN mapping of a table page): scribbling over
        page tables has its own test, here it would only blur the checks."""
        if not isinstance(va, int) or isinstance(va, bool) or not 0 <= va < U64 or s.closed:
            return False
        tables = {p for sp in self.spaces if not sp.closed for p in table_pages(self.m, sp.root, kernel=sp.kernel)}
        for page in range(va & ~0xFFF, min(va + max(n, 1), U64), PAGE_SIZE):
            t = call(s.translate, page)
            if isinstance(t, dmamap.Translation) and (t.pa & ~0xFFF) in tables:
                return True
        return False

    @rule(i=st.integers(0, 7), data=st.data())
    def write(self, i: int, data: st.DataObject) -> None:
        s = self._space(i)
        va, buf = data.draw(ints(*self._near()), "va"), data.draw(data_bytes(), "data")
        if not self._hits_tables(s, va, len(buf) if isinstance(buf, (bytes, bytearray, memoryview)) else 1):
            call(s.write, va, buf)

    @rule(i=st.integers(0, 7), data=st.data(), width=st.sampled_from([8, 16, 32, 64]), write=st.booleans())
    def rw_n(self, i: int, data: st.DataObject, width: int, write: bool) -> None:
        s = self._space(i)
        va = data.draw(ints(*self._near()), "va")
        if write:
            if not self._hits_tables(s, va, width // 8):
                call(getattr(s, f"write{width}"), va, data.draw(ints(), "value"))
        else:
            r = call(getattr(s, f"read{width}"), va)
            if isinstance(r, int):
                assert 0 <= r < 1 << width

    @rule(i=st.integers(0, 7), data=st.data())
    def translate(self, i: int, data: st.DataObject) -> None:
        s = self._space(i)
        r = call(s.translate, data.draw(ints(*self._near()), "va"))
        if isinstance(r, dmamap.Translation):
            assert r.page_size in (1 << 12, 1 << 21, 1 << 30)

    @rule(i=st.integers(0, 7), data=st.data(), write=st.booleans())
    def touch(self, i: int, data: st.DataObject, write: bool) -> None:
        s = self._space(i)
        count = data.draw(st.one_of(st.integers(0, 64), ints()), "count")
        stride = data.draw(st.one_of(st.sampled_from([1, 8, PAGE_SIZE, 1 << 21]), ints()), "stride")
        # bound the work, not the hostility: at most 4096 real touches per call
        if isinstance(count, int) and not isinstance(count, bool) and 4096 < count < U64 and \
                isinstance(stride, int) and 0 < stride < 1 << 24:
            count = 4096
        call(s.touch, data.draw(ints(*self._near()), "va"), count, stride, write=write)

    @rule(i=st.integers(0, 7), data=st.data())
    def touch_list(self, i: int, data: st.DataObject) -> None:
        call(self._space(i).touch_list, data.draw(st.lists(ints(*self._near()), max_size=8), "vas"))

    @rule(i=st.integers(0, 7), data=st.data())
    def count_present(self, i: int, data: st.DataObject) -> None:
        r = call(self._space(i).count_present, data.draw(ints(*self._near()), "va"), data.draw(ints(), "size"))
        if isinstance(r, int):
            assert r >= 0

    @rule(data=st.data())
    def phys(self, data: st.DataObject) -> None:
        pa = data.draw(ints(*self._near()), "pa")
        if data.draw(st.booleans(), "write"):
            # never scribble over page tables: that is tested on its own below
            tables = {p for s in self.spaces if not s.closed for p in table_pages(self.m, s.root, kernel=s.kernel)}
            if isinstance(pa, int) and not isinstance(pa, bool) and any(t <= pa + 2 * PAGE_SIZE and pa < t + PAGE_SIZE
                                                                       for t in tables):
                return
            call(self.m.phys_write, pa, data.draw(data_bytes(), "data"))
        else:
            call(self.m.phys_read, pa, data.draw(sizes(), "n"))

    @rule(data=st.data(), op=st.sampled_from(["flush_dcache_range", "invalidate_dcache_range",
                                               "clean_dcache_range"]))
    def cache_maint(self, data: st.DataObject, op: str) -> None:
        call(getattr(self.m, op), data.draw(ints(*self._near()), "pa"), data.draw(ints(), "size"))

    # -- PTE primitives --
    def _prot(self, data: st.DataObject, vma: Any) -> Any:
        base = dmamap.PgProt.make(self.m.isa, write=True)
        if vma is not None and isinstance(vma, dmamap.Vma) and vma.live:
            base = vma.page_prot
        return data.draw(st.one_of(st.just(base), st.just(dmamap.pgprot_noncached(base)),
                                   st.just(dmamap.pgprot_writecombine(base)),
                                   st.just(dmamap.PgProt.make("aarch64" if self.m.isa == "x86_64" else "x86_64")),
                                   ints()), "prot")

    @rule(vma=vmas, data=st.data(), large=st.booleans())
    def remap_pfn_range(self, vma: Any, data: st.DataObject, large: bool) -> None:
        assume(vma is not None)
        self._atomic(dmamap.remap_pfn_range, vma, data.draw(ints(*self._near()), "addr"),
                     data.draw(ints(*self._pfns()), "pfn"), data.draw(ints(PAGE_SIZE, 1 << 21, len(vma)), "size"),
                     self._prot(data, vma), large=large)

    @rule(vma=vmas, data=st.data(), kind=st.sampled_from(["pfn", "pfn_prot", "mixed"]))
    def insert_pfn(self, vma: Any, data: st.DataObject, kind: str) -> None:
        assume(vma is not None)
        addr, pfn = data.draw(ints(*self._near()), "addr"), data.draw(ints(*self._pfns()), "pfn")
        if kind == "pfn":
            self._atomic(dmamap.vmf_insert_pfn, vma, addr, pfn)
        elif kind == "mixed":
            self._atomic(dmamap.vmf_insert_mixed, vma, addr, pfn)
        else:
            self._atomic(dmamap.vmf_insert_pfn_prot, vma, addr, pfn, self._prot(data, vma))

    @rule(vma=vmas, page=pages, data=st.data())
    def insert_page(self, vma: Any, page: Any, data: st.DataObject) -> None:
        assume(vma is not None)
        page = data.draw(st.sampled_from([page, dmamap.Page(self.m, 0), dmamap.Page(self.m, 1 << 30), "page",
                                          self.other.alloc_pages(1) if not self.other.closed else None]), "page")
        self._atomic(dmamap.vm_insert_page, vma, data.draw(ints(*self._near()), "addr"), page)

    @rule(vma=vmas, data=st.data())
    def zap(self, vma: Any, data: st.DataObject) -> None:
        assume(vma is not None)
        self._atomic(dmamap.zap_vma_ptes, vma, data.draw(ints(*self._near()), "addr"),
                     data.draw(ints(PAGE_SIZE, len(vma)), "size"))

    @rule(vma=vmas, data=st.data())
    def change_protection(self, vma: Any, data: st.DataObject) -> None:
        assume(vma is not None)
        self._atomic(dmamap.change_protection, vma, data.draw(ints(*self._near()), "addr"),
                     data.draw(ints(PAGE_SIZE, len(vma)), "size"), self._prot(data, vma))

    @rule(vma=vmas, data=st.data())
    def vma_attrs(self, vma: Any, data: st.DataObject) -> None:
        assume(vma is not None)
        op = data.draw(st.sampled_from(["set", "clear", "prot", "builtin", "pio", "handler", "flags"]), "op")
        if op == "set":
            self._atomic(vma.vm_flags_set, data.draw(ints(0x400, 0x10000000, 0x4000), "flags"))
        elif op == "clear":
            self._atomic(vma.vm_flags_clear, data.draw(ints(0x400, 0x10000000), "flags"))
        elif op == "prot":
            self._atomic(setattr, vma, "page_prot", self._prot(data, vma))
        elif op == "builtin":
            chunks = data.draw(st.lists(st.tuples(ints(*self._pfns()), ints(1, 2, 512)), max_size=4), "chunks")
            self._atomic(vma.set_builtin_fault, data.draw(st.sampled_from(["page", "pfn", "bogus"]), "kind"),
                         chunks, first_page=data.draw(ints(0, 1), "first"),
                         fault_around=data.draw(ints(1, 16), "around"), large=data.draw(st.booleans(), "large"))
        elif op == "pio":
            self._atomic(vma.set_pio_trap, data.draw(ints(0x300, 0x400), "port"))
        elif op == "flags":
            call(lambda: (vma.vm_flags, vma.page_prot, vma.live, repr(vma)))
        else:
            results = data.draw(st.lists(st.sampled_from(["page", "freed", "other", "nopage", "sigbus", "junk",
                                                          "raise", "insert", "unmap"]), min_size=1, max_size=4),
                                "handler")
            self._atomic(vma.set_fault_handler, self._handler(vma, results))

    def _handler(self, vma: dmamap.Vma, results: list[str]) -> Any:
        state = {"i": 0}
        m = self.m

        def handler(vmf: dmamap.VmFault) -> Any:
            what = results[state["i"] % len(results)]
            state["i"] += 1
            if what == "page":
                return self.live_pages[0][0] if self.live_pages else dmamap.VM_FAULT_SIGBUS
            if what == "freed":
                return dmamap.Page(m, m.ram_base >> 12)
            if what == "other":
                return dmamap.Page(self.other, 0)
            if what == "nopage":
                return dmamap.VM_FAULT_NOPAGE
            if what == "sigbus":
                return dmamap.VM_FAULT_SIGBUS
            if what == "junk":
                return "junk"
            if what == "raise":
                raise KeyError("fault handler bug")
            if what == "unmap":
                vmf.vma.mm.munmap(vmf.vma)
                return dmamap.VM_FAULT_NOPAGE
            return dmamap.vmf_insert_pfn(vmf.vma, vmf.address, self.devs[0].bar(0)[0] >> 12)

        return handler

    # -- pages --
    @rule(target=pages, data=st.data())
    def alloc_pages(self, data: st.DataObject) -> Any:
        n = data.draw(st.one_of(st.integers(1, 8), ints()), "n")
        r = call(self.m.alloc_pages, n, align=data.draw(st.one_of(st.just(1), ints()), "align"))
        if isinstance(r, dmamap.Page):
            self.live_pages.append((r, n))
            return r
        return dmamap.Page(self.m, self.m.ram_base >> 12)

    @rule(data=st.data())
    def page_ops(self, data: st.DataObject) -> None:
        op = data.draw(st.sampled_from(["free", "get", "put", "info", "bogus_free"]), "op")
        if op == "bogus_free":
            pfn, n = data.draw(ints(*self._pfns()), "pfn"), data.draw(ints(1), "n")
            call(lambda: self.m.free_pages(dmamap.Page(self.m, pfn), n))
            return
        if not self.live_pages:
            return
        i = data.draw(st.integers(0, len(self.live_pages) - 1), "i")
        page, n = self.live_pages[i]
        if op == "free":
            r = call(self.m.free_pages, page, data.draw(st.one_of(st.just(n), ints(n)), "n"))
            if r is None:
                self.live_pages.pop(i)
        elif op == "get":
            call(self.m.get_page, page)
        elif op == "put":
            call(self.m.put_page, page)
        else:
            call(lambda: (page.refcount, page.mapcount, page.flags))

    # -- devices and DMA --
    def _dev(self, data: st.DataObject) -> Any:
        return data.draw(st.sampled_from(self.devs + ["dev", None]), "dev")

    @rule(data=st.data())
    def device_dma(self, data: st.DataObject) -> None:
        dev = data.draw(st.sampled_from(self.devs), "dev")
        handles = [b.dma_handle for _, b in self.live_bufs]
        addr = data.draw(ints(*handles, *self._near()), "dma_addr")
        if data.draw(st.booleans(), "write"):
            tables = {p for s in self.spaces if not s.closed for p in table_pages(self.m, s.root, kernel=s.kernel)}
            be = self.m.backend
            pa = be.dma_to_phys(dev, addr) if be and isinstance(addr, int) and not isinstance(addr, bool) else addr
            if isinstance(pa, int) and any(t <= pa + 2 * PAGE_SIZE and pa < t + PAGE_SIZE for t in tables):
                return
            call(dev.dma_write, addr, data.draw(data_bytes(), "data"))
        else:
            call(dev.dma_read, addr, data.draw(sizes(), "n"))

    @rule(target=bufs, data=st.data())
    def dma_alloc(self, data: st.DataObject) -> Any:
        dev = self._dev(data)
        r = self._atomic(dmamap.dma_alloc_coherent, dev, data.draw(st.one_of(st.integers(1, 3 * PAGE_SIZE), ints()),
                                                                    "size"))
        if isinstance(r, dmamap.DmaBuffer):
            self.live_bufs.append((dev, r))
            return (dev, r)
        return None

    @rule(buf=bufs, data=st.data())
    def dma_free(self, buf: Any, data: st.DataObject) -> None:
        assume(buf is not None)
        dev, b = buf
        size = data.draw(st.one_of(st.just(b.size), ints(b.size)), "size")
        cpu = data.draw(st.one_of(st.just(b.cpu_addr), ints(b.cpu_addr)), "cpu_addr")
        r = self._atomic(dmamap.dma_free_coherent, dev, size, cpu, b.dma_handle)
        if r is None:
            self.live_bufs.remove((dev, b))

    @rule(buf=bufs, vma=vmas, data=st.data())
    def dma_mmap(self, buf: Any, vma: Any, data: st.DataObject) -> None:
        assume(buf is not None)
        dev, b = buf
        strategy = data.draw(st.sampled_from([None, *dmamap.STRATEGIES, "bogus"]), "strategy")
        if vma is not None:   # a refused mmap left None in the bundle: no attribute to set
            call(setattr, vma, "vm_pgoff", data.draw(st.one_of(st.just(0), ints()), "pgoff"))
        self._atomic(dmamap.dma_mmap_coherent, dev, vma, *b, strategy=strategy)
        if data.draw(st.booleans(), "lookup"):
            call(dmamap.dma_coherent_to_page, dev, b.cpu_addr, b.dma_handle, data.draw(ints(), "offset"))
            call(dmamap.dma_coherent_to_pfn, dev, b.cpu_addr, b.dma_handle)

    @rule(target=sgs, data=st.data())
    def sg_alloc(self, data: st.DataObject) -> Any:
        dev = self._dev(data)
        size = data.draw(st.one_of(st.integers(1, 12 * PAGE_SIZE), ints()), "size")
        r = self._atomic(dmamap.dma_alloc_coherent_sg, dev, size,
                         max_chunk_pages=data.draw(st.one_of(st.integers(1, 4), ints()), "chunk"),
                         seed=data.draw(st.integers(0, 3), "seed"))
        if isinstance(r, dmamap.SgTable):
            self.live_sgs.append((dev, r))
            return (dev, r)
        return None

    @rule(sg=sgs)
    def sg_free(self, sg: Any) -> None:
        assume(sg is not None)
        dev, t = sg
        if self._atomic(dmamap.dma_free_coherent_sg, dev, t) is None:
            self.live_sgs.remove((dev, t))

    @rule(sg=sgs, vma=vmas, data=st.data())
    def sg_mmap(self, sg: Any, vma: Any, data: st.DataObject) -> None:
        assume(sg is not None)
        dev, t = sg
        if vma is not None:   # a refused mmap left None in the bundle: no attribute to set
            call(setattr, vma, "vm_pgoff", data.draw(st.one_of(st.integers(0, 12), ints()), "pgoff"))
        self._atomic(dmamap.dma_mmap_coherent_sg, dev, vma, t,
                     nr_pages=data.draw(st.one_of(st.none(), st.integers(0, 12), ints()), "nr"),
                     strategy=data.draw(st.sampled_from([None, *dmamap.STRATEGIES]), "strategy"))

    @rule(vma=vmas, data=st.data())
    def mmio_map(self, vma: Any, data: st.DataObject) -> None:
        bars = [d.bar(i)[0] for d in self.devs for i in range(len(d.bars))]
        self._atomic(dmamap.mmio_map, vma, data.draw(ints(*bars), "phys"), data.draw(ints(PAGE_SIZE), "size"),
                     cache=data.draw(st.sampled_from(["uc", "wc", "wb"]), "cache"))

    @rule(vma=vmas, data=st.data())
    def pio_map(self, vma: Any, data: st.DataObject) -> None:
        self._atomic(dmamap.pio_map, vma, data.draw(ints(0x300, 0x400, 0xFFF0), "port"),
                     data.draw(st.one_of(st.integers(1, 64), ints()), "count"))

    @rule(data=st.data())
    def ports(self, data: st.DataObject) -> None:
        port = data.draw(ints(0x300, 0x400, 0xFFFF), "port")
        size = data.draw(st.sampled_from([1, 2, 4, 8, 3, 0, -1]), "size")
        if data.draw(st.booleans(), "write"):
            call(self.m.port_write, port, data.draw(ints(), "value"), size)
        else:
            call(self.m.port_read, port, size)

    @rule(data=st.data())
    def device_churn(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(["x", "y", "d0", "", 5]), "name")
        bars = data.draw(st.lists(ints(PAGE_SIZE), max_size=2), "bars")
        ports = data.draw(st.lists(st.tuples(ints(0x500, 0xFFF0), ints(1, 16)), max_size=2), "ports")
        d = call(self.m.add_device, name, bars=bars, ports=ports)
        if isinstance(d, dmamap.Device):
            call(d.remove, force=data.draw(st.booleans(), "force"))

    @invariant()
    def exceptions_only_as_documented(self) -> None:
        # the machine never closes by itself and its counters stay sane
        if hasattr(self, "m"):
            s = self.m.stats
            assert 0 <= s.ram_pages_used <= s.ram_pages and s.table_pages <= s.ram_pages_used

    # -- cleanup: every page comes back --
    def _release_everything(self) -> None:
        for s in self.spaces[1:]:
            s.close()
        for v in self.made_vmas:   # the kernel's own VMAs (direct map, DMA remaps) are not ours
            if v.live:
                v.mm.munmap(v)
        for dev, t in list(self.live_sgs):
            dmamap.dma_free_coherent_sg(dev, t)
        for dev, b in list(self.live_bufs):
            dmamap.dma_free_coherent(dev, b.size, b.cpu_addr, b.dma_handle)
        for page, n in list(self.live_pages):
            r = call(self.m.free_pages, page, n)
            if isinstance(r, BaseException):   # pinned by get_page: drop the extra references
                while page.refcount > 1:
                    self.m.put_page(page)
                self.m.free_pages(page, n)
        check_consistency(self.m, [self.m.kernel])
        assert self.m.stats.ram_pages_used == self.base_used, "pages leaked"
        assert snapshot(self.m, self.m.kernel.root) == self.base_kernel, "kernel page tables not restored"


ApiFuzz.TestCase.settings = SETTINGS
test_api_fuzz = ApiFuzz.TestCase


# ---- the C entry points, directly ----

C_INTS = st.one_of(st.sampled_from([0, 1, 2, 4, 8, 0xFFF, 0x1000, 0x1001, 1 << 21, 1 << 30, 1 << 36, 1 << 47, 1 << 48,
                                    (1 << 63) - 1, 1 << 63, U64 - 0x1000, U64 - 1]),
                   st.integers(0, U64 - 1), st.integers(0, 1 << 24))
C_SINTS = st.one_of(st.sampled_from([0, 1, -1, 2, 3, 4, 5, 8, 64, 1 << 20, (1 << 31) - 1, -(1 << 31)]),
                    st.integers(-(1 << 31), (1 << 31) - 1))


#: Calls that may write emulated memory anywhere, page tables included.
C_WRITERS = {"phys_rw", "dma_rw", "access", "access_bulk", "fast", "view_pin", "rw_n", "touch", "touch_list",
             "prims"}


def _view_pin_unpin(m: Any, ap: Any, va: int, n: int, w: int, err: Any, out: Any) -> None:
    """A zero-copy view's pin, dropped again when it succeeded (the tables stay consistent)."""
    host, pa, refused = out("uint8_t **"), out("uint64_t *"), out("int *")
    rc = lib.dmamap_view_pin(ap, va, n, w, host, pa, refused, err)
    if rc == 0 and host != ffi.NULL and pa != ffi.NULL and refused != ffi.NULL and not refused[0]:
        lib.dmamap_view_unpin(m, pa[0], n)


def _c_call(name: str, m: Any, as_: Any, data: st.DataObject, ids: list[int]) -> None:
    N = ffi.NULL
    err = data.draw(st.sampled_from([N, ffi.new("struct dmamap_err *")]), "err")
    u = lambda label: data.draw(C_INTS, label)  # noqa: E731
    i = lambda label: data.draw(st.one_of(C_SINTS, st.sampled_from(ids)) if label == "id" else C_SINTS,  # noqa: E731
                                label)
    mp = data.draw(st.sampled_from([m, N]), "m")
    ap = data.draw(st.sampled_from([as_, N]), "as")

    def out(t: str) -> Any:
        return data.draw(st.sampled_from([ffi.new(t), N]), "out")

    def buf() -> tuple[Any, int]:
        n = data.draw(st.integers(0, 3 * PAGE_SIZE), "n")
        return data.draw(st.sampled_from([ffi.new("uint8_t[]", max(n, 1)), N]), "buf"), n

    fns = {
        "phys_rw": lambda: (lambda b, n: getattr(lib, data.draw(st.sampled_from(["dmamap_phys_read",
                                                                                  "dmamap_phys_write"]), "f"))(
            mp, u("pa"), b, n, err))(*buf()),
        "dma_rw": lambda: (lambda b, n: lib.dmamap_dma_rw(mp, u("pa"), b, n, i("w"), err))(*buf()),
        "page_info": lambda: lib.dmamap_page_info(mp, u("pfn"), out("struct dmamap_page_info *"), err),
        "pfn_valid": lambda: lib.dmamap_pfn_valid(mp, u("pfn")),
        "get_put": lambda: (lib.dmamap_get_page(mp, u("pfn"), err), lib.dmamap_put_page(mp, u("pfn"), err)),
        "region": lambda: (lib.dmamap_region_count(mp), lib.dmamap_region_get(mp, i("i"), out(
            "struct dmamap_region *")), lib.dmamap_region_of(mp, u("pa"))),
        "iowin": lambda: (lib.dmamap_iowin_map(mp, u("pa"), u("size"), u("port"), err),
                          lib.dmamap_iowin_unmap(mp, u("pa"), err)),
        "port": lambda: lib.dmamap_port_access(mp, u("port"), i("size"), i("w") & 1, out("uint64_t *"), err),
        "maint": lambda: (lib.dmamap_flush_dcache_range(mp, u("pa"), u("size"), err),
                          lib.dmamap_invalidate_dcache_range(mp, u("pa"), u("size"), err),
                          lib.dmamap_clean_dcache_range(mp, u("pa"), u("size"), err)),
        "memtype": lambda: (lambda pa, sz, c: (lib.dmamap_memtype_reserve(mp, pa, sz, c, err),
                                               lib.dmamap_memtype_lookup(mp, pa),
                                               lib.dmamap_memtype_free(mp, pa, sz, c, err)))(u("pa"), u("sz"),
                                                                                             i("cache")),
        "reports": lambda: lib.dmamap_memtype_reports(mp, data.draw(st.sampled_from(
            [ffi.new("struct dmamap_memtype_report[4]"), N]), "out"), data.draw(st.integers(-5, 4), "max")),
        "stats": lambda: (lib.dmamap_machine_stats(mp, out("struct dmamap_machine_stats *")),
                          lib.dmamap_as_stats(ap, out("struct dmamap_as_stats *"))),
        "arch": lambda: (lib.dmamap_isa_levels(i("isa")), lib.dmamap_cache_name(i("isa"), i("c")),
                         lib.dmamap_prot_make(i("isa"), u("f") & 0xFFFFFFFF, i("c")),
                         lib.dmamap_prot_cache(i("isa"), u("p")), lib.dmamap_prot_set_cache(i("isa"), u("p"), i("c")),
                         lib.dmamap_prot_flags(i("isa"), u("p")), lib.dmamap_cache_by_pat_index(i("isa"), i("x")),
                         lib.dmamap_cache_is_device(i("isa"), i("c")), lib.dmamap_cache_is_cacheable(i("isa"), i("c"))),
        "mmap_munmap": lambda: (lambda idp: (lib.dmamap_mmap(ap, u("addr"), u("len") & 0xFFFFFFF, u("flags") & 0xFFF,
                                                             data.draw(st.sampled_from([0x27, 0x8000000000000067,
                                                                                        0x6e7, 0]), "prot"),
                                                             u("align"), idp, err),
                                             idp != N and lib.dmamap_munmap(ap, idp[0], err)))(out("int64_t *")),
        "vma_ops": lambda: (lib.dmamap_vma_info(ap, i("id"), out("struct dmamap_vma_info *"), err),
                            lib.dmamap_vma_set_flags(ap, i("id"), u("set"), u("clear"), err),
                            lib.dmamap_vma_set_prot(ap, i("id"), u("prot"), err),
                            lib.dmamap_vma_find(ap, u("va"))),
        "set_fault": lambda: (lambda n: lib.dmamap_vma_set_fault(
            ap, i("id"), i("kind"), data.draw(st.sampled_from([ffi.new("struct dmamap_chunk[]", [
                (data.draw(C_INTS, "pfn"), data.draw(C_INTS, "np")) for _ in range(max(n, 1))]), N]), "chunks"),
            n, u("first"), u("around"), i("large"), err))(data.draw(st.integers(0, 3), "nchunks")),
        "prims": lambda: (lib.dmamap_remap_pfn_range(ap, i("id"), u("addr"), u("pfn"), u("size"), u("prot"), i("fl"),
                                                     err),
                          lib.dmamap_vmf_insert_pfn_prot(ap, i("id"), u("addr"), u("pfn"), u("prot"), err),
                          lib.dmamap_vmf_insert_mixed(ap, i("id"), u("addr"), u("pfn"), err),
                          lib.dmamap_vm_insert_page(ap, i("id"), u("addr"), u("pfn"), err),
                          lib.dmamap_zap_vma_ptes(ap, i("id"), u("addr"), u("size"), err),
                          lib.dmamap_mprotect(ap, i("id"), u("addr"), u("size"), u("prot"), err)),
        "walks": lambda: (lib.dmamap_translate(ap, u("va"), out("struct dmamap_xlate *"), err),
                          lib.dmamap_count_present(ap, u("va"), u("size"), out("uint64_t *"), err),
                          lib.dmamap_as_va_range(ap, out("uint64_t *"), out("uint64_t *")),
                          lib.dmamap_as_root(ap), lib.dmamap_tlb_flush_all(ap)),
        "access": lambda: (lambda b, n: lib.dmamap_access(ap, u("va"), b, n, i("w") & 1, err))(*buf()),
        "access_bulk": lambda: (lambda b, n: lib.dmamap_access_bulk(ap, u("va"), b, n, i("w") & 1, err))(*buf()),
        "fast": lambda: (lib.dmamap_read8_fast(ap, u("va")), lib.dmamap_read16_fast(ap, u("va")),
                         lib.dmamap_read32_fast(ap, u("va")), lib.dmamap_read64_fast(ap, u("va")),
                         lib.dmamap_write8_fast(ap, u("va"), u("v") & 0xFF),
                         lib.dmamap_write16_fast(ap, u("va"), u("v") & 0xFFFF),
                         lib.dmamap_write32_fast(ap, u("va"), u("v") & 0xFFFFFFFF),
                         lib.dmamap_write64_fast(ap, u("va"), u("v")), lib.dmamap_fast_nop(ap, u("va"))),
        "view_pin": lambda: _view_pin_unpin(m, ap, u("va"), data.draw(st.one_of(C_INTS, st.integers(0, 3 * PAGE_SIZE)),
                                                                       "n"), i("w") & 1, err, out),
        "rw_n": lambda: (lib.dmamap_read_n(ap, u("va"), i("size"), out("uint64_t *"), err),
                         lib.dmamap_write_n(ap, u("va"), i("size"), u("v"), err)),
        "touch": lambda: lib.dmamap_touch(ap, u("va"), data.draw(st.integers(0, 64), "count") if data.draw(
            st.booleans(), "small") else u("count"), u("stride"), i("w") & 1, err),
        "touch_list": lambda: (lambda n: lib.dmamap_touch_list(ap, data.draw(st.sampled_from(
            [ffi.new("uint64_t[]", [data.draw(C_INTS, "va") for _ in range(max(n, 1))]), N]), "vas"), n, i("w") & 1,
            err))(data.draw(st.integers(0, 4), "count")),
        "alloc_free": lambda: (lambda p: (lib.dmamap_alloc_pages(mp, u("n") & 0xFFFF, u("align"), u("fl") & 0xF, p,
                                                                  err),
                                          p != N and lib.dmamap_free_pages(mp, p[0], 1, err)))(out("uint64_t *")),
        "machine_new": lambda: lib.dmamap_machine_free(lib.dmamap_machine_new(i("isa"), N, u("size") & ~0xFFF & 0,
                                                                               i("c"), err)),
        "bench": lambda: (lib.dmamap_bench_store_loop(N, u("n"), u("v")), lib.dmamap_now_ns()),
    }
    note(name)
    fns[name]()


C_NAMES = ["phys_rw", "dma_rw", "page_info", "pfn_valid", "get_put", "region", "iowin", "port", "maint", "memtype",
           "reports", "stats", "arch", "mmap_munmap", "vma_ops", "set_fault", "prims", "walks", "access",
           "access_bulk", "fast", "view_pin", "rw_n", "touch", "touch_list", "alloc_free", "machine_new", "bench"]


@settings(max_examples=EXAMPLES * 20, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(isa=st.sampled_from(["x86_64", "aarch64"]), data=st.data())
def test_c_entry_points_fuzz(isa: str, data: st.DataObject) -> None:
    """Random C calls with hostile integers and NULLs: return codes only, never a crash.

    Pointers are NULL or valid (a live machine and address space, buffers at
    least as long as the length passed): anything else is beyond what a C API
    can check.  Without stray writes, the tables and counters stay consistent.
    """
    machine = dmamap.Machine(isa, ram=1 << 20)
    try:
        space = machine.kernel if data.draw(st.booleans(), "kernel") else machine.new_address_space()
        ids = [space.mmap(n * PAGE_SIZE).id for n in (1, 4, 512)]
        names = [data.draw(st.sampled_from(C_NAMES), "fn") for _ in range(data.draw(st.integers(1, 6), "calls"))]
        for name in names:
            _c_call(name, machine._ptr(), space._ptr(), data, ids)
        if not C_WRITERS & set(names):
            check_consistency(machine, [machine.kernel] + ([] if space.kernel else [space]))
    finally:
        machine.close()


# ---- page tables scribbled over ----

@settings(max_examples=EXAMPLES * 20, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(platform=st.sampled_from(["x86_64", "aarch64"]), data=st.data())
def test_scribbled_page_tables_never_crash_the_core(platform: str, data: st.DataObject) -> None:
    """Garbage written into live page-table pages (phys_write, device DMA, a PFN
    mapping of a table page) must never take the C core outside emulated memory:
    walks, faults, remaps, unmaps and teardown raise or carry on."""
    m = dmamap.Machine(platform, ram=1 << 20)
    try:
        mm = m.new_address_space()
        vma = mm.mmap(8 * PAGE_SIZE)
        page = m.alloc_pages(2)
        dmamap.vm_insert_page(vma, vma.start, page)
        pfnmap = mm.mmap(1 << 21)
        dmamap.remap_pfn_range(pfnmap, pfnmap.start, m.ram_base >> 12, PAGE_SIZE, pfnmap.page_prot)
        tables = table_pages(m, mm.root)
        for _ in range(data.draw(st.integers(1, 4), "scribbles")):
            pa = data.draw(st.sampled_from(tables), "table") + 8 * data.draw(st.integers(0, 511), "index")
            value = data.draw(st.one_of(C_INTS, st.sampled_from(tables).map(lambda t: t | 0x67),
                                        st.sampled_from(tables).map(lambda t: t | 3)), "value")
            how = data.draw(st.sampled_from(["phys", "kernel", "user"]), "how")
            raw = value.to_bytes(8, "little")
            if how == "phys":
                m.phys_write(pa, raw)
            elif how == "kernel" and m.virt_addr_valid(m.page_offset + pa - m.ram_base):
                m.kernel.write(m.page_offset + pa - m.ram_base, raw)
            else:   # map the table page into user space and write through it
                win = mm.mmap(PAGE_SIZE)
                call(dmamap.remap_pfn_range, win, win.start, pa >> 12, PAGE_SIZE, win.page_prot)
                call(mm.write, win.start + (pa & 0xFFF), raw)
        for _ in range(data.draw(st.integers(1, 8), "ops")):
            op = data.draw(st.sampled_from(["read", "write", "translate", "count", "remap", "zap", "protect",
                                            "insert", "munmap", "touch"]), "op")
            va = data.draw(st.sampled_from([vma.start, vma.start + PAGE_SIZE, pfnmap.start, 0x1000_0000,
                                            1 << 30, (1 << 39) - PAGE_SIZE]), "va")
            if op == "read":
                call(mm.read, va, 8)
            elif op == "write":
                call(mm.write, va, b"12345678")
            elif op == "translate":
                call(mm.translate, va)
            elif op == "count":
                call(mm.count_present, 0, 1 << 39)
            elif op == "remap":
                call(dmamap.remap_pfn_range, pfnmap, pfnmap.start + PAGE_SIZE, m.ram_base >> 12, PAGE_SIZE,
                     pfnmap.page_prot)
            elif op == "zap":
                call(dmamap.zap_vma_ptes, pfnmap, pfnmap.start, len(pfnmap))
            elif op == "protect":
                call(lambda: dmamap.change_protection(vma, vma.start, len(vma), vma.page_prot))
            elif op == "insert":
                call(dmamap.vm_insert_page, vma, vma.start + PAGE_SIZE, page)
            elif op == "munmap":
                call(mm.munmap, vma)
            else:
                call(mm.touch, vma.start, 8, PAGE_SIZE, write=True)
        mm.close()
    finally:
        m.close()


# ---- every public callable, random arguments ----

#: Public callables that change process-wide state, not a machine's.
GLOBAL_STATE = {"register_backend"}


def _world() -> dict[str, Any]:
    m = dmamap.Machine("arm", ram=1 << 20)
    mm = m.new_address_space()
    dev = m.add_device("d", bars=[PAGE_SIZE], ports=[(0x300, 8)])
    buf = dmamap.dma_alloc_coherent(dev, 2 * PAGE_SIZE)
    sg = dmamap.dma_alloc_coherent_sg(dev, 3 * PAGE_SIZE, seed=0)
    vma = mm.mmap(2 * PAGE_SIZE)
    dead = mm.mmap(PAGE_SIZE)
    mm.munmap(dead)
    return {"machine": m, "mm": mm, "dev": dev, "buf": buf, "sg": sg, "vma": vma, "dead": dead,
            "page": m.alloc_pages(1), "prot": vma.page_prot, "kaddr": buf.cpu_addr}


def _callables(w: dict[str, Any]) -> dict[str, Any]:
    out = {f"dmamap.{n}": getattr(dmamap, n) for n in dmamap.__all__
           if callable(getattr(dmamap, n)) and n not in GLOBAL_STATE
           and not isinstance(getattr(dmamap, n), enum.EnumMeta)}   # VmFlags(junk) is the enum module's ValueError
    for label in ("machine", "mm", "dev", "vma", "page", "sg", "prot"):
        obj = w[label]
        for n in dir(obj):
            if isinstance(obj, int) and hasattr(int, n):
                continue   # int's own methods (to_bytes, ...) are not dmamap's API
            if not n.startswith("_") and callable(getattr(obj, n, None)) and not isinstance(getattr(obj, n), type):
                out[f"{label}.{n}"] = getattr(obj, n)
    return out


@settings(max_examples=EXAMPLES * 3, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_public_callable_with_random_arguments(data: st.DataObject) -> None:
    """Any public function, method or constructor, given arguments of any type
    (this machine's objects, another's, freed ones, hostile ints, junk), raises
    only DmamapError or TypeError."""
    w = _world()
    try:
        fns = _callables(w)
        pool = list(w.values()) + EDGES[:12] + NOT_INTS + [w["machine"].ram_base, w["vma"].start, "x86", "rw",
                                                           "prefault", dmamap.VmFlags.VM_IO]
        for _ in range(data.draw(st.integers(1, 4), "calls")):
            name = data.draw(st.sampled_from(sorted(fns)), "fn")
            args = data.draw(st.lists(st.sampled_from(pool), max_size=5), "args")
            r = call(fns[name], *args)
            if isinstance(r, dmamap.Machine) and r is not w["machine"]:
                r.close()
    finally:
        w["machine"].close()
