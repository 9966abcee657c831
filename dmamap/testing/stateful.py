"""Model-based conformance: a hypothesis state machine that runs random
sequences of alloc / map (every allowed strategy, plain and scatter-gather) /
user access / device DMA / unmap / free on a backend and checks every
observable result against a plain-Python reference model (one ``bytearray``
per buffer).

Needs hypothesis (the ``test`` extra).  :func:`model_for` gives the state
machine class for one :class:`~dmamap.testing.target.Target`; :func:`run_model`
runs it with bounded, derandomized examples and raises
:class:`~dmamap.testing.target.ConformanceFailure` with the falsifying steps.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.reporting import with_reporter
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE
from dmamap.dma import DmaBuffer, SgTable
from dmamap.errors import AccessFault, DmaFreeError, DmaUseAfterFreeError
from dmamap.mm import Vma
from dmamap.testing.checks import buffer_pages, resource_snapshot, sg_pages
from dmamap.testing.target import ConformanceFailure, Target

__all__ = ["DmaModel", "model_for", "run_model"]

RULE = "model_based"


def _fail(addr: int, message: str) -> None:
    raise ConformanceFailure(RULE, addr, message)


class _Buf:
    """A live buffer and its reference model (plain class: hypothesis prints its repr)."""

    def __init__(self, obj: DmaBuffer | SgTable, pages: list[tuple[int, int, int]], data: bytearray) -> None:
        self.obj = obj
        self.pages = pages            # (cpu_addr, dma_addr, pa) per page
        self.data = data              # the reference model
        self.maps: list[_Map] = []

    @property
    def sg(self) -> bool:
        return isinstance(self.obj, SgTable)

    def __repr__(self) -> str:
        kind = f"sg {len(self.obj)} chunks" if isinstance(self.obj, SgTable) else f"{self.obj.size:#x} bytes"
        return f"<buffer {self.pages[0][0]:#x} {len(self.pages)} pages, {kind}>"


class _Map:
    def __init__(self, buf: _Buf, vma: Vma, first: int, n: int, strategy: str | None) -> None:
        self.buf = buf
        self.vma = vma
        self.first = first
        self.n = n
        self.strategy = strategy

    def __repr__(self) -> str:
        return f"<mapping {self.vma.start:#x} pages [{self.first}, {self.first + self.n}) {self.strategy}>"


class DmaModel(RuleBasedStateMachine):
    """Subclass with ``target`` set (see :func:`model_for`)."""

    target: ClassVar[Target]

    def __init__(self) -> None:
        super().__init__()
        t = self.target
        self.m = dmamap.Machine(t.name, ram=t.ram)
        self.dev = self.m.add_device("model")
        self.base = resource_snapshot(self.m)
        self.mm = self.m.new_address_space()
        self.mm_tables = self.mm.stats.table_pages
        self.bufs: list[_Buf] = []
        self.maps: list[_Map] = []
        self.freed: list[DmaBuffer] = []
        self.strategies: list[str | None] = [None, *t.caps.strategies]
        self.clean = True      # False while a step is running: teardown then only releases

    # ---- helpers ----
    def _step(self) -> None:
        self.clean = False

    def _done(self) -> None:
        self.clean = True

    def _dma_write(self, b: _Buf, off: int, data: bytes) -> None:
        done = 0
        while done < len(data):
            pos = off + done
            page, inpage = pos >> PAGE_SHIFT, pos & (PAGE_SIZE - 1)
            n = min(PAGE_SIZE - inpage, len(data) - done)
            self.dev.dma_write(b.pages[page][1] + inpage, data[done:done + n])
            done += n

    def _dma_read(self, b: _Buf, off: int, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            pos = off + len(out)
            page, inpage = pos >> PAGE_SHIFT, pos & (PAGE_SIZE - 1)
            k = min(PAGE_SIZE - inpage, n - len(out))
            out += self.dev.dma_read(b.pages[page][1] + inpage, k)
        return bytes(out)

    def _span(self, data: Any, total: int) -> tuple[int, int]:
        off = data.draw(st.integers(0, total - 1), label="offset")
        n = data.draw(st.integers(1, min(2 * PAGE_SIZE, total - off)), label="length")
        return off, n

    @staticmethod
    def _bytes(seed: int, n: int) -> bytes:
        return random.Random(seed).randbytes(n)

    def _compare(self, got: bytes, want: bytes, va: int, bus_of: Any, what: str) -> None:
        if got != want:
            i = next(i for i, (x, y) in enumerate(zip(got, want, strict=False)) if x != y)
            _fail(va + i, f"{what}: byte {i} of {len(want)} is {got[i]:#04x}, the model says {want[i]:#04x} "
                          f"(bus address {bus_of(i):#x})")

    # ---- allocation ----
    @rule(pages=st.integers(1, 6), short=st.integers(0, PAGE_SIZE - 1))
    def alloc(self, pages: int, short: int) -> None:
        self._step()
        size = max(1, pages * PAGE_SIZE - short)
        buf = dmamap.dma_alloc_coherent(self.dev, size)
        b = _Buf(buf, buffer_pages(self.dev, buf), bytearray(pages * PAGE_SIZE))
        self.bufs.append(b)
        got = self._dma_read(b, 0, size)
        if any(got):
            _fail(buf.dma_handle, f"dma_alloc_coherent returned a buffer that is not zeroed ({sum(map(bool, got))} "
                                  f"non-zero bytes)")
        self._done()

    @precondition(lambda self: self.target.caps.scatter_gather)
    @rule(pages=st.integers(2, 12), max_chunk=st.integers(1, 4), seed=st.integers(0, 255))
    def alloc_sg(self, pages: int, max_chunk: int, seed: int) -> None:
        self._step()
        sg = dmamap.dma_alloc_coherent_sg(self.dev, pages * PAGE_SIZE, max_chunk_pages=max_chunk, seed=seed)
        b = _Buf(sg, sg_pages(self.dev, sg), bytearray(pages * PAGE_SIZE))
        self.bufs.append(b)
        if any(self._dma_read(b, 0, len(b.data))):
            _fail(sg.entries[0].dma_handle, "dma_alloc_coherent_sg returned chunks that are not zeroed")
        self._done()

    # ---- mapping ----
    @precondition(lambda self: self.bufs)
    @rule(data=st.data())
    def map(self, data: Any) -> None:
        self._step()
        b = data.draw(st.sampled_from(self.bufs), label="buffer")
        total = len(b.pages)
        first = data.draw(st.integers(0, total - 1), label="first page")
        n = data.draw(st.integers(1, total - first), label="pages")
        strategy = data.draw(st.sampled_from(self.strategies), label="strategy")
        vma = self.mm.mmap(n << PAGE_SHIFT, offset=first << PAGE_SHIFT)
        if isinstance(b.obj, SgTable):
            dmamap.dma_mmap_coherent_sg(self.dev, vma, b.obj, nr_pages=n, strategy=strategy)
        else:
            dmamap.dma_mmap_coherent(self.dev, vma, *b.obj, strategy=strategy)
        mp = _Map(b, vma, first, n, strategy)
        b.maps.append(mp)
        self.maps.append(mp)
        self._done()

    @precondition(lambda self: self.maps)
    @rule(data=st.data(), seed=st.integers(0, 1 << 16))
    def cpu_write(self, data: Any, seed: int) -> None:
        self._step()
        mp = data.draw(st.sampled_from(self.maps), label="mapping")
        off, n = self._span(data, mp.n << PAGE_SHIFT)
        payload = self._bytes(seed, n)
        self.mm.write(mp.vma.start + off, payload)
        base = (mp.first << PAGE_SHIFT) + off
        b = mp.buf
        b.data[base:base + n] = payload
        # no sync call: the device sees it at once
        self._compare(self._dma_read(b, base, n), payload, mp.vma.start + off,
                      lambda i: b.pages[(base + i) >> PAGE_SHIFT][1] + ((base + i) & (PAGE_SIZE - 1)),
                      f"device read right after a user write through {mp!r}")
        self._done()

    @precondition(lambda self: self.maps)
    @rule(data=st.data())
    def cpu_read(self, data: Any) -> None:
        self._step()
        mp = data.draw(st.sampled_from(self.maps), label="mapping")
        off, n = self._span(data, mp.n << PAGE_SHIFT)
        base = (mp.first << PAGE_SHIFT) + off
        got = self.mm.read(mp.vma.start + off, n)
        b = mp.buf
        self._compare(got, bytes(b.data[base:base + n]), mp.vma.start + off,
                      lambda i: b.pages[(base + i) >> PAGE_SHIFT][1] + ((base + i) & (PAGE_SIZE - 1)),
                      f"user read through {mp!r} of {b!r}")
        self._done()

    @precondition(lambda self: self.bufs)
    @rule(data=st.data(), seed=st.integers(0, 1 << 16))
    def dma_write(self, data: Any, seed: int) -> None:
        self._step()
        b = data.draw(st.sampled_from(self.bufs), label="buffer")
        off, n = self._span(data, len(b.data))
        payload = self._bytes(seed, n)
        self._dma_write(b, off, payload)
        b.data[off:off + n] = payload
        for mp in b.maps:   # every user mapping of the span sees it at once
            lo, hi = max(off, mp.first << PAGE_SHIFT), min(off + n, (mp.first + mp.n) << PAGE_SHIFT)
            if lo < hi:
                va = mp.vma.start + lo - (mp.first << PAGE_SHIFT)
                self._compare(self.mm.read(va, hi - lo), bytes(b.data[lo:hi]), va,
                              lambda i, lo=lo: b.pages[(lo + i) >> PAGE_SHIFT][1] + ((lo + i) & (PAGE_SIZE - 1)),
                              f"user read through {mp!r} right after a device write")
        self._done()

    @precondition(lambda self: self.bufs)
    @rule(data=st.data())
    def dma_read(self, data: Any) -> None:
        self._step()
        b = data.draw(st.sampled_from(self.bufs), label="buffer")
        off, n = self._span(data, len(b.data))
        got = self._dma_read(b, off, n)
        self._compare(got, bytes(b.data[off:off + n]), b.pages[off >> PAGE_SHIFT][1] + (off & (PAGE_SIZE - 1)),
                      lambda i: b.pages[(off + i) >> PAGE_SHIFT][1] + ((off + i) & (PAGE_SIZE - 1)),
                      f"device read of {b!r}")
        self._done()

    @precondition(lambda self: self.maps)
    @rule(data=st.data())
    def unmap(self, data: Any) -> None:
        self._step()
        mp = data.draw(st.sampled_from(self.maps), label="mapping")
        self.mm.touch(mp.vma.start, mp.n)   # warm TLB entries: the unmap must shoot them down
        dmamap.dma_munmap_coherent(mp.vma)
        self.maps.remove(mp)
        mp.buf.maps.remove(mp)
        for i in range(mp.n):
            va = mp.vma.start + (i << PAGE_SHIFT)
            try:
                self.mm.read(va, 1)
            except AccessFault:
                continue
            _fail(va, f"a read after dma_munmap_coherent of {mp!r} did not fault")
        self._done()

    @precondition(lambda self: self.bufs)
    @rule(data=st.data())
    def free(self, data: Any) -> None:
        self._step()
        b = data.draw(st.sampled_from(self.bufs), label="buffer")
        if b.maps:
            try:
                self._free(b)
            except DmaFreeError:
                got = self._dma_read(b, 0, len(b.data))
                self._compare(got, bytes(b.data), b.pages[0][1], lambda i: b.pages[i >> PAGE_SHIFT][1],
                              f"contents of {b!r} after a refused free")
            else:
                _fail(b.pages[0][0], f"freeing {b!r} while {b.maps[0]!r} maps it was accepted")
        else:
            self._free(b)
            self.bufs.remove(b)
            if isinstance(b.obj, DmaBuffer):
                self.freed.append(b.obj)
        self._done()

    def _free(self, b: _Buf) -> None:
        if isinstance(b.obj, SgTable):
            dmamap.dma_free_coherent_sg(self.dev, b.obj)
        else:
            dmamap.dma_free_coherent(self.dev, b.obj.size, b.obj.cpu_addr, b.obj.dma_handle)

    @precondition(lambda self: self.freed)
    @rule(data=st.data())
    def map_freed(self, data: Any) -> None:
        self._step()
        buf = data.draw(st.sampled_from(self.freed), label="freed buffer")
        if int(buf.cpu_addr) in self.dev.dma_debug.live:   # the address was handed out again
            self._done()
            return
        vma = self.mm.mmap(PAGE_SIZE)
        try:
            dmamap.dma_mmap_coherent(self.dev, vma, *buf)
        except DmaUseAfterFreeError:
            pass
        else:
            _fail(int(buf.cpu_addr), "dma_mmap_coherent of a freed buffer was accepted")
        finally:
            self.mm.munmap(vma)
        self._done()

    # ---- end of an example ----
    def teardown(self) -> None:
        try:
            if not self.clean:
                return
            for mp in list(self.maps):
                dmamap.dma_munmap_coherent(mp.vma)
            for b in list(self.bufs):
                self._free(b)
            if self.mm.stats.table_pages != self.mm_tables:
                _fail(self.mm.root, f"{self.mm.stats.table_pages} page-table pages remain after every unmap "
                                    f"(started with {self.mm_tables})")
            self.mm.close()
            after = resource_snapshot(self.m)
            diff = [f"{k}: {self.base[k]} -> {after[k]}" for k in self.base if self.base[k] != after[k]]
            if diff:
                _fail(0, "resources did not return to baseline after unmapping and freeing everything: "
                         + "; ".join(diff))
        finally:
            self.m.close()


def model_for(target: Target) -> type[DmaModel]:
    """The state machine class bound to ``target``."""
    return type(f"DmaModel_{target.name}", (DmaModel,), {"target": target})


def run_model(target: Target, *, max_examples: int = 30, steps: int = 30, shrink: bool = True) -> None:
    """Run the model-based test (derandomized, so runs are reproducible);
    raises ConformanceFailure with the falsifying steps when the backend
    disagrees with the model.  ``shrink=False`` reports the first failing
    sequence as found (much faster on a broken backend, longer to read)."""
    phases = tuple(p for p in Phase if p is not Phase.explain and (shrink or p is not Phase.shrink))
    conf = settings(max_examples=max_examples, stateful_step_count=steps, deadline=None, database=None,
                    derandomize=True, print_blob=False, report_multiple_bugs=False, phases=phases,
                    suppress_health_check=list(HealthCheck))

    lines: list[str] = []
    with with_reporter(lambda value: lines.append(str(value))):
        try:
            run_state_machine_as_test(model_for(target), settings=conf)
        except ConformanceFailure as exc:
            raise ConformanceFailure(RULE, exc.addr, _with_steps(exc.detail, exc)) from None
        except Exception as exc:   # noqa: BLE001 - anything the backend raised on a valid sequence
            addr = int(getattr(exc, "addr", 0) or 0)
            raise ConformanceFailure(RULE, addr, _with_steps(f"unexpected {type(exc).__name__}: {exc}", exc)) \
                from None


def _with_steps(message: str, exc: BaseException) -> str:
    """The failure plus hypothesis' falsifying steps (recorded as exception notes)."""
    steps = [ln for note in getattr(exc, "__notes__", []) for ln in str(note).splitlines() if ln.strip()]
    steps = [s if len(s) <= 200 else s[:197] + "..." for s in steps][:60]
    return message + ("\nfalsifying steps:\n  " + "\n  ".join(steps) if steps else "")
