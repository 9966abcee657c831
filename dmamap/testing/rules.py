"""The conformance rules, as plain functions over a :class:`Target`.

Nothing here needs pytest: :mod:`dmamap.testing.suite` turns every rule into a
named pytest test, :mod:`dmamap.testing.runner` runs them directly (``dmamap
conformance BACKEND``).  A rule either returns (pass), raises
:class:`RuleSkipped` (a capability the backend does not claim), or raises
:class:`ConformanceFailure`, whose message starts ``[rule] at 0x...:``.

Every rule builds its own small machine, so rules are independent and a
broken rule cannot poison the next one.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE, STRATEGIES
from dmamap.backends import Backend
from dmamap.device import Bar, Device, PortRange
from dmamap.dma import DmaBuffer, SgTable
from dmamap.errors import (
    AccessFault,
    BackendError,
    BadPageError,
    DmaDoubleFreeError,
    DmaFreeError,
    DmaLeakError,
    DmamapError,
    DmaUseAfterFreeError,
    InvalidArgumentError,
    OutOfMemoryError,
    PteBusyError,
    StrategyError,
    VirtToPageError,
    VmaNotMappedError,
)
from dmamap.machine import Machine
from dmamap.mm import AddressSpace, Vma
from dmamap.registry import available_backends, get_backend, register_backend
from dmamap.testing.pagetable import DEVICE, RawEntry, walk

__all__ = [
    "ConformanceFailure", "RuleSkipped", "Capabilities", "Target", "Rule", "RULES", "STRATEGY_VARIANTS",
    "BAD_INPUT_CASES", "run_rule", "rule_by_name", "resolve_backend",
]

#: ``"default"`` (the backend's own choice) and every strategy the helpers know.
STRATEGY_VARIANTS = ("default", *STRATEGIES)
LARGE_STRATEGIES = ("prefault-large", "fault-large")
PAGE_STRATEGIES = ("fault-page",)   # hand out page descriptors whatever the memory
MiB = 1 << 20


class ConformanceFailure(AssertionError):
    """A backend broke a rule; the message names the rule and the address."""

    def __init__(self, rule: str, addr: int, message: str) -> None:
        self.rule = rule
        self.addr = int(addr)
        self.detail = message
        super().__init__(f"[{rule}] at {self.addr:#x}: {message}")


class RuleSkipped(Exception):
    """The rule needs a capability the backend does not claim."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


# ---------------------------------------------------------------------------
# what is tested


@dataclass(frozen=True)
class Capabilities:
    """What a backend claims; rules needing an unclaimed capability are skipped.

    ``None`` in :meth:`Target.__init__` overrides means "detect": page
    descriptors from a trial allocation (``dma_coherent_to_page``), port I/O
    from ``Backend.pio``, large pages and scatter-gather are claimed by every
    backend that uses the generic helpers.
    """

    page_descriptors: bool
    port_io: bool
    large_pages: bool
    scatter_gather: bool
    strategies: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"page_descriptors": self.page_descriptors, "port_io": self.port_io,
                "large_pages": self.large_pages, "scatter_gather": self.scatter_gather,
                "strategies": list(self.strategies)}


def resolve_backend(backend: str | Backend | type[Backend]) -> tuple[str, bool]:
    """``(name, registered)``: the registry name under which ``backend`` can be
    given to Machine(), and whether it had to be registered for that (Backend
    objects and classes not registered yet are; :meth:`Target.close` undoes it)."""
    if isinstance(backend, str):
        get_backend(backend)   # BackendError names the known ones
        return backend, False
    if isinstance(backend, type) and issubclass(backend, Backend):
        cls: type[Backend] = backend
        inst: Backend | None = None
    elif isinstance(backend, Backend):
        cls, inst = type(backend), backend
    else:
        raise BackendError(f"conformance target must be a backend name, Backend or Backend subclass, "
                           f"not {backend!r}")
    name = cls.name or cls.__name__
    if name in available_backends():
        existing = get_backend(name)
        if existing is inst or (inst is None and type(existing) is cls):
            return name, False
        name = f"{name}@{cls.__module__}.{cls.__qualname__}"
    register_backend(name, inst if inst is not None else cls(), clobber=True)
    return name, True


class Target:
    """One backend under test: its registry name, claimed capabilities and a
    factory for fresh machines."""

    def __init__(self, backend: str | Backend | type[Backend], *, ram: int = 64 * MiB,
                 page_descriptors: bool | None = None, port_io: bool | None = None,
                 large_pages: bool | None = None, scatter_gather: bool | None = None,
                 strategies: tuple[str, ...] | None = None, model_examples: int = 30, model_steps: int = 30,
                 model_shrink: bool = True) -> None:
        self.name, self._registered = resolve_backend(backend)
        self.backend = get_backend(self.name)
        self.ram = ram
        self.model_examples = model_examples
        self.model_steps = model_steps
        self.model_shrink = model_shrink
        if page_descriptors is None:
            page_descriptors = self._detect_page_descriptors()
        if port_io is None:
            port_io = self.backend.pio in ("trap", "window")
        large = True if large_pages is None else bool(large_pages)
        sg = True if scatter_gather is None else bool(scatter_gather)
        if strategies is None:
            strategies = tuple(s for s in STRATEGIES
                               if (page_descriptors or s not in PAGE_STRATEGIES)
                               and (large or s not in LARGE_STRATEGIES))
        unknown = set(strategies) - set(STRATEGIES)
        if unknown:
            raise ValueError(f"unknown strategies {sorted(unknown)}; known: {', '.join(STRATEGIES)}")
        self.caps = Capabilities(bool(page_descriptors), bool(port_io), large, sg, tuple(strategies))

    def __repr__(self) -> str:
        return f"<conformance Target {self.name!r} {self.caps}>"

    def close(self) -> None:
        """Unregister the backend if this target registered it."""
        if self._registered:
            reg = importlib.import_module("dmamap.registry")   # (the package attribute is the view)
            with reg._lock:
                if reg._known.get(self.name) is self.backend:
                    del reg._known[self.name]
            self._registered = False

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _detect_page_descriptors(self) -> bool:
        """Does ``dma_coherent_to_page`` work on a trial buffer?  (A backend
        that cannot even allocate claims nothing here; the rules then fail it.)"""
        try:
            with self.machine() as m:
                dev = m.add_device("probe")
                buf = dmamap.dma_alloc_coherent(dev, PAGE_SIZE)
                try:
                    dmamap.dma_coherent_to_page(dev, buf.cpu_addr, buf.dma_handle)
                    return True
                except BadPageError:
                    return False
        except Exception:   # noqa: BLE001
            return False

    @contextmanager
    def machine(self) -> Iterator[Machine]:
        m = Machine(self.name, ram=self.ram)
        try:
            yield m
        finally:
            m.close()

    def strategy(self, variant: str) -> str | None:
        """The strategy argument for a variant, or RuleSkipped if not allowed."""
        if variant == "default":
            return None
        if variant not in self.caps.strategies:
            if variant in PAGE_STRATEGIES and not self.caps.page_descriptors:
                raise RuleSkipped(f"strategy {variant!r} hands out page descriptors and {self.name}'s coherent "
                                  f"memory has none (the helpers must refuse it: see bad_inputs_rejected)")
            if variant in LARGE_STRATEGIES and not self.caps.large_pages:
                raise RuleSkipped(f"strategy {variant!r} needs large pages, which {self.name} does not claim")
            raise RuleSkipped(f"strategy {variant!r} is not among {self.name}'s strategies")
        return variant

    def need(self, capability: str) -> None:
        if not getattr(self.caps, capability):
            raise RuleSkipped(f"{self.name} does not claim {capability.replace('_', ' ')}")


# ---------------------------------------------------------------------------
# the rule registry


@dataclass(frozen=True)
class Rule:
    name: str
    group: str
    summary: str
    variants: tuple[str, ...]
    func: Callable[[Target, str], None] = field(repr=False)
    needs: str | None = None

    def run(self, target: Target, variant: str = "") -> None:
        run_rule(self, target, variant)


RULES: list[Rule] = []


def _rule(name: str, group: str, summary: str, variants: tuple[str, ...] = ("",), needs: str | None = None
          ) -> Callable[[Callable[[Target, str], None]], Callable[[Target, str], None]]:
    def deco(fn: Callable[[Target, str], None]) -> Callable[[Target, str], None]:
        RULES.append(Rule(name, group, summary, variants, fn, needs))
        return fn
    return deco


def rule_by_name(name: str) -> Rule:
    for r in RULES:
        if r.name == name:
            return r
    raise KeyError(f"no conformance rule {name!r}; rules: {', '.join(r.name for r in RULES)}")


def run_rule(rule: Rule | str, target: Target, variant: str = "") -> None:
    """Run one rule variant: returns on pass, raises RuleSkipped or ConformanceFailure."""
    r = rule_by_name(rule) if isinstance(rule, str) else rule
    if r.variants != ("",) and variant not in r.variants:
        raise KeyError(f"rule {r.name!r} has no variant {variant!r}; variants: {', '.join(r.variants)}")
    if r.needs:
        target.need(r.needs)
    try:
        r.func(target, variant)
    except (ConformanceFailure, RuleSkipped):
        raise
    except DmamapError as exc:
        raise ConformanceFailure(r.name, exc.addr, f"unexpected {type(exc).__name__}: {exc}") from exc
    except Exception as exc:   # noqa: BLE001 - a backend bug is a failure of the rule, not of the suite
        raise ConformanceFailure(r.name, 0, f"unexpected {type(exc).__name__}: {exc}") from exc


class _Check:
    """Failure helper bound to one rule (and variant)."""

    def __init__(self, rule: str, variant: str = "") -> None:
        self.rule = rule
        self.variant = variant

    def fail(self, addr: int, message: str) -> None:
        where = f" ({self.variant})" if self.variant else ""
        raise ConformanceFailure(self.rule, addr, message + where)


# ---------------------------------------------------------------------------
# helpers: what a mapping is made of


@dataclass
class Mapping:
    """A user mapping of (part of) a coherent buffer or scatter list, and where
    each of its pages lives: ``pages[i] = (cpu_addr, dma_addr, pa)`` of page i."""

    mm: AddressSpace
    vma: Vma
    pages: list[tuple[int, int, int]]

    @property
    def start(self) -> int:
        return self.vma.start

    @property
    def size(self) -> int:
        return len(self.pages) << PAGE_SHIFT

    def bus(self, offset: int) -> int:
        return self.pages[offset >> PAGE_SHIFT][1] + (offset & (PAGE_SIZE - 1))


def _buffer_pages(dev: Device, buf: DmaBuffer) -> list[tuple[int, int, int]]:
    n = (buf.size + PAGE_SIZE - 1) >> PAGE_SHIFT
    pfn = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle)
    return [(int(buf.cpu_addr) + (i << PAGE_SHIFT), buf.dma_handle + (i << PAGE_SHIFT), (pfn + i) << PAGE_SHIFT)
            for i in range(n)]


def _sg_pages(dev: Device, sg: SgTable) -> list[tuple[int, int, int]]:
    out = []
    for e in sg.entries:
        pfn = dmamap.dma_coherent_to_pfn(dev, e.cpu_addr, e.dma_handle)
        out += [(int(e.cpu_addr) + (i << PAGE_SHIFT), e.dma_handle + (i << PAGE_SHIFT), (pfn + i) << PAGE_SHIFT)
                for i in range(e.nr_pages)]
    return out


def map_buffer(dev: Device, mm: AddressSpace, buf: DmaBuffer, strategy: str | None, *, first_page: int = 0,
               nr_pages: int | None = None) -> Mapping:
    pages = _buffer_pages(dev, buf)
    n = len(pages) - first_page if nr_pages is None else nr_pages
    vma = mm.mmap(n << PAGE_SHIFT)
    dmamap.dma_mmap_coherent(dev, vma, *buf, offset=first_page << PAGE_SHIFT, strategy=strategy)
    return Mapping(mm, vma, pages[first_page:first_page + n])


def map_sg(dev: Device, mm: AddressSpace, sg: SgTable, strategy: str | None, *, offset: int, nr_pages: int,
           vma_pages: int | None = None) -> Mapping:
    vma = mm.mmap((vma_pages or nr_pages) << PAGE_SHIFT)
    dmamap.dma_mmap_coherent_sg(dev, vma, sg, offset=offset, nr_pages=nr_pages, strategy=strategy)
    return Mapping(mm, vma, _sg_pages(dev, sg)[offset:offset + nr_pages])


def _pattern(seed: object, n: int) -> bytes:
    return random.Random(repr(seed)).randbytes(n)


def _first_diff(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def _device_read(dev: Device, mp: Mapping) -> bytes:
    return b"".join(dev.dma_read(bus, PAGE_SIZE) for _, bus, _ in mp.pages)


def _device_write(dev: Device, mp: Mapping, data: bytes) -> None:
    for i, (_, bus, _) in enumerate(mp.pages):
        dev.dma_write(bus, data[i << PAGE_SHIFT:(i + 1) << PAGE_SHIFT])


def check_coherent(chk: _Check, dev: Device, mp: Mapping, seed: object) -> None:
    """Both DMA directions through the user mapping, with no sync call:
    the device sees what user space wrote, user space sees what the device wrote,
    also after the CPU has read (and could have cached) the old contents."""
    mm, n = mp.mm, mp.size
    for rnd in range(2):
        mm.read(mp.start, n)                       # fault in, and warm any cache lines
        data = _pattern((seed, "dev", rnd), n)
        _device_write(dev, mp, data)
        got = mm.read(mp.start, n)
        if got != data:
            i = _first_diff(got, data)
            bad = sum(x != y for x, y in zip(got, data, strict=True))
            chk.fail(mp.start + i, f"device->CPU: user space read {bad} stale byte(s) of {n} after a device "
                                   f"write with no sync call (first at bus address {mp.bus(i):#x})")
        data = _pattern((seed, "cpu", rnd), n)
        mm.write(mp.start, data)
        seen = _device_read(dev, mp)
        if seen != data:
            i = _first_diff(seen, data)
            bad = sum(x != y for x, y in zip(seen, data, strict=True))
            chk.fail(mp.start + i, f"CPU->device: the device read {bad} stale byte(s) of {n} after a user write "
                                   f"with no sync call (first at bus address {mp.bus(i):#x})")


def _raw(m: Machine, mm: AddressSpace, va: int) -> RawEntry | None:
    return walk(m, mm.root, va)


def check_attributes(chk: _Check, m: Machine, mp: Mapping) -> None:
    """Each user PTE (raw) maps the right page with the attribute of the
    kernel's own mapping (raw) of the same memory."""
    for i, (cpu, _, pa) in enumerate(mp.pages):
        va = mp.start + (i << PAGE_SHIFT)
        u = _raw(m, mp.mm, va)
        if u is None:
            chk.fail(va, "no valid user PTE after the page was touched")
            return
        k = walk(m, m.kernel.root, cpu)
        if k is None:
            chk.fail(cpu, f"the kernel alias cpu_addr {cpu:#x} of user page {va:#x} is not mapped")
            return
        if u.pa != pa or k.pa != pa:
            chk.fail(va, f"user PTE maps pa {u.pa:#x} and the kernel alias {cpu:#x} maps pa {k.pa:#x}, but the "
                         f"buffer page is at pa {pa:#x}")
        if not u.user:
            chk.fail(va, "user PTE is not user-accessible")
        if u.cache != k.cache:
            kind = ("a cacheable alias of uncached memory" if u.cacheable and not k.cacheable else
                    "an uncached alias of cacheable memory" if k.cacheable and not u.cacheable else
                    "a mismatched memory type")
            chk.fail(va, f"user PTE {u.entry:#x} (at pa {u.entry_pa:#x}) is {u.cache} but the kernel alias "
                         f"{cpu:#x} of pa {pa:#x} is {k.cache}: {kind}")


def _touch(mp: Mapping) -> None:
    mp.mm.touch(mp.start, len(mp.pages))


def _device(m: Machine, **kw: Any) -> Device:
    return m.add_device("conformance", **kw)


def _sg_shape(seed: object) -> tuple[int, int, int, int, int]:
    """(total pages, max chunk pages, sg seed, offset, nr_pages) for one random trial."""
    rng = random.Random(repr(seed))
    total = rng.randint(6, 40)
    max_chunk = rng.randint(1, 8)
    offset = rng.randrange(total)
    return total, max_chunk, rng.randrange(1 << 30), offset, rng.randint(1, total - offset)


# ---------------------------------------------------------------------------
# rules: coherency


@_rule("coherency_mmap", "coherency",
       "a dma_mmap_coherent mapping is coherent both ways with no sync call", STRATEGY_VARIANTS)
def coherency_mmap(t: Target, variant: str) -> None:
    strategy = t.strategy(variant)
    chk = _Check("coherency_mmap", variant)
    with t.machine() as m:
        dev = _device(m)
        buf = dmamap.dma_alloc_coherent(dev, 6 * PAGE_SIZE)
        mm = m.new_address_space()
        whole = map_buffer(dev, mm, buf, strategy)
        check_coherent(chk, dev, whole, ("whole", variant))
        part = map_buffer(dev, mm, buf, strategy, first_page=2, nr_pages=3)   # with an offset
        check_coherent(chk, dev, part, ("offset", variant))


@_rule("coherency_mmap_sg", "coherency",
       "a dma_mmap_coherent_sg mapping is coherent both ways with no sync call", STRATEGY_VARIANTS,
       needs="scatter_gather")
def coherency_mmap_sg(t: Target, variant: str) -> None:
    strategy = t.strategy(variant)
    chk = _Check("coherency_mmap_sg", variant)
    with t.machine() as m:
        dev = _device(m)
        sg = dmamap.dma_alloc_coherent_sg(dev, 12, max_chunk_pages=3, seed=7)
        mm = m.new_address_space()
        check_coherent(chk, dev, map_sg(dev, mm, sg, strategy, offset=0, nr_pages=12), ("sg", variant))
        check_coherent(chk, dev, map_sg(dev, mm, sg, strategy, offset=2, nr_pages=8), ("sg-off", variant))


# ---------------------------------------------------------------------------
# rules: attributes and page descriptors


@_rule("user_attribute_matches_kernel", "attributes",
       "the user PTE (decoded from raw page-table memory) has the memory type of the kernel alias",
       STRATEGY_VARIANTS)
def user_attribute_matches_kernel(t: Target, variant: str) -> None:
    strategy = t.strategy(variant)
    chk = _Check("user_attribute_matches_kernel", variant)
    with t.machine() as m:
        dev = _device(m)
        mm = m.new_address_space()
        buf = dmamap.dma_alloc_coherent(dev, 5 * PAGE_SIZE)
        mp = map_buffer(dev, mm, buf, strategy, first_page=1)
        _touch(mp)
        check_attributes(chk, m, mp)
        if t.caps.scatter_gather:
            sg = dmamap.dma_alloc_coherent_sg(dev, 9, max_chunk_pages=4, seed=3)
            mp = map_sg(dev, mm, sg, strategy, offset=1, nr_pages=8)
            _touch(mp)
            check_attributes(chk, m, mp)


def _page_state(m: Machine, pa: int) -> tuple[int, int] | None:
    pfn = pa >> PAGE_SHIFT
    if not m.pfn_valid(pfn):
        return None
    p = m.pfn_to_page(pfn)
    return p.refcount, p.mapcount


@_rule("page_descriptors_ram_only", "page descriptors",
       "page descriptors are handed out for RAM only; non-RAM is prefaulted or PFN-inserted (special PTEs, "
       "no page references)", STRATEGY_VARIANTS)
def page_descriptors_ram_only(t: Target, variant: str) -> None:
    strategy = t.strategy(variant)
    chk = _Check("page_descriptors_ram_only", variant)
    with t.machine() as m:
        dev = _device(m)
        mm = m.new_address_space()
        buf = dmamap.dma_alloc_coherent(dev, 4 * PAGE_SIZE)
        mappings = [map_buffer(dev, mm, buf, strategy)]
        if t.caps.scatter_gather:
            sg = dmamap.dma_alloc_coherent_sg(dev, 8, max_chunk_pages=3, seed=5)
            mappings.append(map_sg(dev, mm, sg, strategy, offset=0, nr_pages=8))
        before = {pa: _page_state(m, pa) for mp in mappings for _, _, pa in mp.pages}
        for mp in mappings:
            for i in range(len(mp.pages)):
                va = mp.start + (i << PAGE_SHIFT)
                try:
                    mm.read(va, 1)
                except BadPageError as exc:
                    chk.fail(va, f"the fault handler handed out a page descriptor for non-RAM: {exc}")
        for mp in mappings:
            flags = mp.vma.vm_flags
            for i, (_, _, pa) in enumerate(mp.pages):
                va = mp.start + (i << PAGE_SHIFT)
                e = _raw(m, mm, va)
                if e is None:
                    chk.fail(va, "no valid user PTE after the page was touched")
                    return
                ram = m.pfn_valid(e.pfn)
                if not ram and not e.special:
                    chk.fail(va, f"non-RAM pa {e.pa:#x} is mapped by a normal PTE {e.entry:#x}, i.e. through a page "
                                 f"descriptor it does not have; it must be prefaulted or PFN-inserted (special)")
                if e.special and not flags & (dmamap.VmFlags.VM_PFNMAP | dmamap.VmFlags.VM_MIXEDMAP):
                    chk.fail(va, f"special PTE in a VMA that is neither VM_PFNMAP nor VM_MIXEDMAP ({flags!r})")
                if ram and e.pa == pa:   # (a PTE mapping the wrong page is sg_linear_mapping's business)
                    b, now = before[pa], _page_state(m, e.pa)
                    assert b is not None and now is not None
                    want = b if e.special else (b[0] + 1, b[1] + 1)
                    if now != want:
                        kind = "special (PFN) PTE" if e.special else "normal PTE of a page descriptor"
                        chk.fail(va, f"page at pa {e.pa:#x} has refcount/mapcount {now} behind a {kind}; "
                                     f"expected {want} (was {b})")
        for mp in mappings:
            dmamap.dma_munmap_coherent(mp.vma)
        for pa, b in before.items():
            if _page_state(m, pa) != b:
                chk.fail(pa, f"page references not returned after unmap: {_page_state(m, pa)} != {b}")


@_rule("coherent_to_page", "page descriptors",
       "dma_coherent_to_page gives the RAM page behind the buffer (from the allocator, not virt_to_page of an "
       "alias)", needs="page_descriptors")
def coherent_to_page(t: Target, variant: str) -> None:
    chk = _Check("coherent_to_page")
    with t.machine() as m:
        dev = _device(m)
        buf = dmamap.dma_alloc_coherent(dev, 4 * PAGE_SIZE)
        for i in range(4):
            off = i << PAGE_SHIFT
            page = dmamap.dma_coherent_to_page(dev, buf.cpu_addr, buf.dma_handle, off)
            pfn = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle, off)
            cpu = int(buf.cpu_addr) + off
            if page.pfn != pfn:
                chk.fail(cpu, f"dma_coherent_to_page gives pfn {page.pfn:#x}, dma_coherent_to_pfn {pfn:#x}")
            if not m.pfn_valid(page.pfn):
                chk.fail(cpu, f"dma_coherent_to_page handed out a page descriptor for non-RAM pfn {page.pfn:#x}")
            k = walk(m, m.kernel.root, cpu)
            if k is None or k.pfn != pfn:
                chk.fail(cpu, f"the kernel alias maps {'nothing' if k is None else hex(k.pa)}, not the page's "
                              f"pa {pfn << PAGE_SHIFT:#x}")
            if m.virt_addr_valid(cpu) and dmamap.virt_to_page(cpu, machine=m) != page:
                chk.fail(cpu, "cpu_addr is in the direct map but virt_to_page disagrees with dma_coherent_to_page")
            if dev._bus_to_phys(buf.dma_handle + off) != pfn << PAGE_SHIFT:
                chk.fail(cpu, f"dma_handle {buf.dma_handle + off:#x} does not reach the page at "
                              f"{pfn << PAGE_SHIFT:#x} (dma_to_phys gives {dev._bus_to_phys(buf.dma_handle + off):#x})")


# ---------------------------------------------------------------------------
# rules: scatter-gather


@_rule("sg_linear_mapping", "scatter-gather",
       "every page of a scatter-gather mapping (random offset / nr_pages) lands on the right chunk and byte",
       STRATEGY_VARIANTS, needs="scatter_gather")
def sg_linear_mapping(t: Target, variant: str) -> None:
    strategy = t.strategy(variant)
    chk = _Check("sg_linear_mapping", variant)
    with t.machine() as m:
        dev = _device(m)
        mm = m.new_address_space()
        for trial in range(4):
            total, max_chunk, seed, offset, n = _sg_shape((variant, trial))
            sg = dmamap.dma_alloc_coherent_sg(dev, total, max_chunk_pages=max_chunk, seed=seed)
            extra = 1 if offset + n < total else 0
            mp = map_sg(dev, mm, sg, strategy, offset=offset, nr_pages=n, vma_pages=n + extra)
            rng = random.Random(repr((variant, trial, "bytes")))
            for i in range(n):
                chunk, pg = sg.locate(offset + i)
                cpu, bus, pa = mp.pages[i]
                va = mp.start + (i << PAGE_SHIFT)
                where = (f"sg page {offset + i} (chunk {sg.entries.index(chunk)} page {pg} of {chunk.nr_pages}, "
                         f"{len(sg)} chunks)")
                byte = rng.randrange(PAGE_SIZE - 8)
                tag = rng.randbytes(8)
                dev.dma_write(bus + byte, tag)
                got = mm.read(va + byte, 8)
                if got != tag:
                    e = _raw(m, mm, va)
                    chk.fail(va + byte, f"user page {i} should be {where} at pa {pa:#x}, but reads other bytes "
                                        f"(PTE maps pa {e.pa if e else 0:#x})")
                e = _raw(m, mm, va)
                if e is None or e.pa != pa:
                    chk.fail(va, f"user page {i} should map {where} at pa {pa:#x}, but the raw PTE maps "
                                 f"{'nothing' if e is None else hex(e.pa)}")
                tag = rng.randbytes(8)
                mm.write(va + byte, tag)
                if dev.dma_read(bus + byte, 8) != tag:
                    chk.fail(va + byte, f"a user write to page {i} did not reach {where} (bus {bus + byte:#x})")
            if extra:
                past = mp.start + (n << PAGE_SHIFT)
                try:
                    mm.read(past, 1)
                except AccessFault:
                    pass
                else:
                    e = _raw(m, mm, past)
                    chk.fail(past, f"the VMA page past the {n} mapped pages is accessible (maps "
                                   f"{hex(e.pa) if e else '?'}): only pages [{offset}, {offset + n}) may be mapped")
            dmamap.dma_munmap_coherent(mp.vma)
            dmamap.dma_free_coherent_sg(dev, sg)


# ---------------------------------------------------------------------------
# rules: unmap and resources


@_rule("unmap_clears_ptes_and_tlb", "unmap",
       "dma_munmap_coherent clears every PTE and the TLB: a read after unmap faults even with a warm TLB",
       STRATEGY_VARIANTS)
def unmap_clears_ptes_and_tlb(t: Target, variant: str) -> None:
    strategy = t.strategy(variant)
    chk = _Check("unmap_clears_ptes_and_tlb", variant)
    with t.machine() as m:
        dev = _device(m)
        mm = m.new_address_space()
        buf = dmamap.dma_alloc_coherent(dev, 5 * PAGE_SIZE)
        mappings = [map_buffer(dev, mm, buf, strategy)]
        if t.caps.scatter_gather:
            sg = dmamap.dma_alloc_coherent_sg(dev, 7, max_chunk_pages=2, seed=11)
            mappings.append(map_sg(dev, mm, sg, strategy, offset=1, nr_pages=6))
        for mp in mappings:
            for _ in range(2):                      # fault in, then hit the (now warm) TLB
                mm.read(mp.start, mp.size)
            vas = [mp.start + (i << PAGE_SHIFT) for i in range(len(mp.pages))]
            if any(_raw(m, mm, va) is None for va in vas):
                chk.fail(mp.start, "a touched page has no valid PTE")
            dmamap.dma_munmap_coherent(mp.vma)
            if mp.vma.live or mm.find_vma(mp.start) is not None:
                chk.fail(mp.start, "the VMA is still mapped after dma_munmap_coherent")
            for va in vas:
                e = _raw(m, mm, va)
                if e is not None:
                    chk.fail(va, f"PTE {e.entry:#x} (at pa {e.entry_pa:#x}) still maps pa {e.pa:#x} after "
                                 f"dma_munmap_coherent")
            for va in vas:
                try:
                    data = mm.read(va, 8)
                except AccessFault:
                    continue
                chk.fail(va, f"a read after dma_munmap_coherent returned {data.hex()} through a stale TLB "
                             f"entry (the page tables no longer map it): the unmap did not flush the TLB")


def _snapshot(m: Machine) -> dict[str, int]:
    s = m.stats
    return {
        "RAM pages in use": s.ram_pages_used,
        "page-table pages": s.table_pages,
        "kernel page-table pages": m.kernel.stats.table_pages,
        "SRAM pool pages free": m.sram_pool.avail >> PAGE_SHIFT,
        "I/O window bytes in use": m.io_window.size - m.io_window.avail,
    }


def _compare(chk: _Check, before: dict[str, int], after: dict[str, int], addr: int, what: str) -> None:
    diff = [f"{k}: {before[k]} -> {after[k]}" for k in before if before[k] != after[k]]
    if diff:
        chk.fail(addr, f"{what} did not return to baseline: {'; '.join(diff)}")


@_rule("resources_return_to_baseline", "resources",
       "page-table pages, DMA memory, memtype reservations and I/O windows return to baseline after "
       "unmap and free", ("coherent", "sg", "mmio", "pio"))
def resources_return_to_baseline(t: Target, variant: str) -> None:
    chk = _Check("resources_return_to_baseline", variant)
    if variant == "sg":
        t.need("scatter_gather")
    if variant == "pio":
        t.need("port_io")
    with t.machine() as m:
        dev = _device(m, bars=[0x2000], ports=[(0x300, 16)])
        base = _snapshot(m)
        mm = m.new_address_space()
        mm_tables = mm.stats.table_pages
        freed: list[int] = []
        strategies = [None, *t.caps.strategies]
        if variant == "coherent":
            for s in strategies:
                buf = dmamap.dma_alloc_coherent(dev, 5 * PAGE_SIZE)
                mp = map_buffer(dev, mm, buf, s, first_page=1)
                mm.write(mp.start, _pattern(s, mp.size))
                dmamap.dma_munmap_coherent(mp.vma)
                freed += [pa for _, _, pa in _buffer_pages(dev, buf)]
                dmamap.dma_free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle)
        elif variant == "sg":
            for s in strategies:
                sg = dmamap.dma_alloc_coherent_sg(dev, 10, max_chunk_pages=3, seed=1)
                mp = map_sg(dev, mm, sg, s, offset=1, nr_pages=8)
                mm.write(mp.start, _pattern(s, mp.size))
                dmamap.dma_munmap_coherent(mp.vma)
                freed += [pa for _, _, pa in _sg_pages(dev, sg)]
                dmamap.dma_free_coherent_sg(dev, sg)
        elif variant == "mmio":
            bar, size = dev.bar(0)
            for cache in ("uc", "wc"):
                vma = mm.mmap(size)
                dmamap.mmio_map(vma, bar, size, cache=cache)
                mm.write32(vma.start, 1)
                mm.munmap(vma)
            freed.append(bar)
        else:
            for _ in range(3):
                vma = mm.mmap(PAGE_SIZE)
                dmamap.pio_map(vma, 0x300, 16)
                mm.write8(vma.start, 1)
                mm.munmap(vma)
        if mm.stats.table_pages != mm_tables:
            chk.fail(mm.root, f"the user address space holds {mm.stats.table_pages} page-table pages after "
                              f"every unmap; it started with {mm_tables}")
        for pa in freed:
            mt = m.memtype_lookup(pa)
            if mt is not None:
                chk.fail(pa, f"a {mt} memtype reservation outlives the unmap and free of pa {pa:#x}")
        mm.close()
        _compare(chk, base, _snapshot(m), 0, "machine resources")
        try:
            dev.remove()
        except DmaLeakError as exc:
            chk.fail(exc.addr, f"device release still finds DMA buffers: {exc}")


# ---------------------------------------------------------------------------
# rules: bad inputs


@dataclass
class _Env:
    t: Target
    m: Machine
    dev: Device
    mm: AddressSpace
    buf: DmaBuffer                      # 4 pages, allocated, not mapped
    bufs: list[DmaBuffer] = field(default_factory=list)
    vmas: list[Vma] = field(default_factory=list)
    sgs: list[SgTable] = field(default_factory=list)

    def alloc(self, pages: int = 2) -> DmaBuffer:
        b = dmamap.dma_alloc_coherent(self.dev, pages * PAGE_SIZE)
        self.bufs.append(b)
        return b

    def mmap(self, pages: int) -> Vma:
        v = self.mm.mmap(pages * PAGE_SIZE)
        self.vmas.append(v)
        return v


def _world(env: _Env) -> dict[str, Any]:
    m = env.m
    state: dict[str, Any] = dict(_snapshot(m))
    state["live DMA allocations"] = sorted(env.dev.dma_debug.live)
    state["devices"] = sorted(m.devices)
    state["attribute reports"] = len(m.attribute_reports)
    for i, v in enumerate(env.vmas):
        live = v.live
        state[f"vma {i} at {v.start:#x}"] = (live, int(v.vm_flags) if live else 0, int(v.page_prot) if live else 0,
                                             env.mm.count_present(v.start, len(v)) if live else 0)
    for b in [env.buf, *env.bufs]:
        if int(b.cpu_addr) in env.dev.dma_debug.live:
            pa = dmamap.dma_coherent_to_pfn(env.dev, b.cpu_addr, b.dma_handle) << PAGE_SHIFT
            state[f"contents of buffer {int(b.cpu_addr):#x}"] = m.phys_read(pa, b.size)
            state[f"memtype of buffer {int(b.cpu_addr):#x}"] = m.memtype_lookup(pa)
    return state


_Case = Callable[[_Env], tuple[Callable[[], Any], type[BaseException]]]
BAD_INPUT_CASES: dict[str, _Case] = {}


def _case(name: str) -> Callable[[_Case], _Case]:
    def deco(fn: _Case) -> _Case:
        BAD_INPUT_CASES[name] = fn
        return fn
    return deco


def _free(env: _Env, b: DmaBuffer, *, size: int | None = None, cpu: int | None = None,
          handle: int | None = None) -> Callable[[], None]:
    return lambda: dmamap.dma_free_coherent(env.dev, b.size if size is None else size,
                                            b.cpu_addr if cpu is None else cpu,
                                            b.dma_handle if handle is None else handle)


@_case("alloc-zero-size")
def _c1(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    return lambda: dmamap.dma_alloc_coherent(env.dev, 0), InvalidArgumentError


@_case("alloc-negative-size")
def _c2(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    return lambda: dmamap.dma_alloc_coherent(env.dev, -PAGE_SIZE), InvalidArgumentError


@_case("alloc-size-not-int")
def _c3(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    return lambda: dmamap.dma_alloc_coherent(env.dev, 4096.0), TypeError   # type: ignore[arg-type]


@_case("alloc-exhausted")
def _c4(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    size = 2 * (env.m.ram_size + env.m.sram_size)
    return lambda: dmamap.dma_alloc_coherent(env.dev, size), OutOfMemoryError


@_case("free-never-allocated")
def _c5(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    b = env.buf
    return _free(env, b, size=PAGE_SIZE, cpu=int(b.cpu_addr) + PAGE_SIZE, handle=b.dma_handle + PAGE_SIZE), \
        DmaFreeError


@_case("free-wrong-size")
def _c6(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    return _free(env, env.buf, size=env.buf.size + PAGE_SIZE), DmaFreeError


@_case("free-wrong-handle")
def _c7(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    return _free(env, env.buf, handle=env.buf.dma_handle + PAGE_SIZE), DmaFreeError


@_case("free-twice")
def _c8(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    b = dmamap.dma_alloc_coherent(env.dev, PAGE_SIZE)
    dmamap.dma_free_coherent(env.dev, b.size, b.cpu_addr, b.dma_handle)
    return _free(env, b), DmaDoubleFreeError


@_case("free-while-mapped")
def _c9(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    b = env.alloc(2)
    dmamap.dma_mmap_coherent(env.dev, env.mmap(2), *b)
    return _free(env, b), DmaFreeError


@_case("mmap-after-free")
def _c10(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    b = dmamap.dma_alloc_coherent(env.dev, 2 * PAGE_SIZE)
    dmamap.dma_free_coherent(env.dev, b.size, b.cpu_addr, b.dma_handle)
    vma = env.mmap(2)
    return lambda: dmamap.dma_mmap_coherent(env.dev, vma, *b), DmaUseAfterFreeError


@_case("mmap-unaligned-offset")
def _c11(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    vma = env.mmap(1)
    return lambda: dmamap.dma_mmap_coherent(env.dev, vma, *env.buf, offset=100), InvalidArgumentError


@_case("mmap-offset-past-end")
def _c12(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    vma = env.mmap(1)
    return lambda: dmamap.dma_mmap_coherent(env.dev, vma, *env.buf, offset=env.buf.size), InvalidArgumentError


@_case("mmap-vma-larger-than-buffer")
def _c13(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    vma = env.mmap(8)
    return lambda: dmamap.dma_mmap_coherent(env.dev, vma, *env.buf), InvalidArgumentError


@_case("mmap-vma-larger-than-rest-after-offset")
def _c14(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    vma = env.mmap(4)
    return lambda: dmamap.dma_mmap_coherent(env.dev, vma, *env.buf, offset=PAGE_SIZE), InvalidArgumentError


@_case("mmap-unknown-strategy")
def _c15(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    vma = env.mmap(4)
    return lambda: dmamap.dma_mmap_coherent(env.dev, vma, *env.buf, strategy="eager"), StrategyError


@_case("mmap-fault-page-without-page-descriptors")
def _c16(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    if env.t.caps.page_descriptors:
        raise RuleSkipped(f"{env.t.name}'s coherent memory has page descriptors: 'fault-page' is legal")
    vma = env.mmap(4)
    return lambda: dmamap.dma_mmap_coherent(env.dev, vma, *env.buf, strategy="fault-page"), StrategyError


@_case("mmap-unmapped-vma")
def _c17(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    vma = env.mmap(4)
    env.mm.munmap(vma)
    return lambda: dmamap.dma_mmap_coherent(env.dev, vma, *env.buf), VmaNotMappedError


@_case("mmap-over-present-ptes")
def _c18(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    vma = env.mmap(4)
    dmamap.dma_mmap_coherent(env.dev, vma, *env.buf, strategy="prefault")
    return lambda: dmamap.dma_mmap_coherent(env.dev, vma, *env.buf, strategy="prefault"), PteBusyError


@_case("coherent-to-page-without-page-descriptors")
def _c19(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    if env.t.caps.page_descriptors:
        raise RuleSkipped(f"{env.t.name}'s coherent memory has page descriptors")
    b = env.buf
    return lambda: dmamap.dma_coherent_to_page(env.dev, b.cpu_addr, b.dma_handle), BadPageError


@_case("virt-to-page-outside-direct-map")
def _c20(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    if env.m.virt_addr_valid(env.buf.cpu_addr):
        raise RuleSkipped(f"{env.t.name}'s cpu_addr is in the direct map, where virt_to_page is defined")
    return lambda: dmamap.virt_to_page(env.buf.cpu_addr, machine=env.m), VirtToPageError


def _need_sg(env: _Env) -> None:
    env.t.need("scatter_gather")


@_case("sg-zero-pages")
def _c21(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    _need_sg(env)
    return lambda: dmamap.dma_alloc_coherent_sg(env.dev, 0), InvalidArgumentError


@_case("sg-zero-max-chunk")
def _c22(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    _need_sg(env)
    return lambda: dmamap.dma_alloc_coherent_sg(env.dev, 4, max_chunk_pages=0), InvalidArgumentError


@_case("sg-exhausted-rolls-back")
def _c23(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    _need_sg(env)
    pages = (env.m.ram_size + env.m.sram_size) >> PAGE_SHIFT
    return lambda: dmamap.dma_alloc_coherent_sg(env.dev, pages, max_chunk_pages=512, seed=1), OutOfMemoryError


def _sg(env: _Env, pages: int = 6) -> SgTable:
    sg = dmamap.dma_alloc_coherent_sg(env.dev, pages, max_chunk_pages=2, seed=2)
    env.sgs.append(sg)
    return sg


@_case("sg-offset-past-end")
def _c24(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    _need_sg(env)
    sg, vma = _sg(env), env.mmap(1)
    return lambda: dmamap.dma_mmap_coherent_sg(env.dev, vma, sg, offset=6, nr_pages=1), InvalidArgumentError


@_case("sg-window-past-end")
def _c25(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    _need_sg(env)
    sg, vma = _sg(env), env.mmap(2)
    return lambda: dmamap.dma_mmap_coherent_sg(env.dev, vma, sg, offset=5, nr_pages=2), InvalidArgumentError


@_case("sg-window-larger-than-vma")
def _c26(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    _need_sg(env)
    sg, vma = _sg(env), env.mmap(2)
    return lambda: dmamap.dma_mmap_coherent_sg(env.dev, vma, sg, offset=0, nr_pages=3), InvalidArgumentError


@_case("sg-free-while-mapped")
def _c27(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    _need_sg(env)
    sg, vma = _sg(env), env.mmap(3)
    dmamap.dma_mmap_coherent_sg(env.dev, vma, sg, offset=2, nr_pages=3)
    return lambda: dmamap.dma_free_coherent_sg(env.dev, sg), DmaFreeError


@_case("device-remove-with-buffers")
def _c28(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    return env.dev.remove, DmaLeakError


@_case("mmio-unaligned")
def _c29(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    bar, _ = env.dev.bar(0)
    vma = env.mmap(1)
    return lambda: dmamap.mmio_map(vma, bar + 8, PAGE_SIZE), InvalidArgumentError


@_case("mmio-not-mmio")
def _c30(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    pa = dmamap.dma_coherent_to_pfn(env.dev, env.buf.cpu_addr, env.buf.dma_handle) << PAGE_SHIFT
    vma = env.mmap(1)
    return lambda: dmamap.mmio_map(vma, pa, PAGE_SIZE), InvalidArgumentError


@_case("mmio-past-bar")
def _c31(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    bar, size = env.dev.bar(0)
    vma = env.mmap(4)
    return lambda: dmamap.mmio_map(vma, bar, 2 * size), InvalidArgumentError


@_case("mmio-bad-cache")
def _c32(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    bar, size = env.dev.bar(0)
    vma = env.mmap(2)
    return lambda: dmamap.mmio_map(vma, bar, size, cache="wb"), InvalidArgumentError


@_case("mmio-larger-than-vma")
def _c33(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    bar, size = env.dev.bar(0)
    vma = env.mmap(1)
    return lambda: dmamap.mmio_map(vma, bar, size), InvalidArgumentError


@_case("pio-outside-port-space")
def _c34(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    env.t.need("port_io")
    vma = env.mmap(1)
    return lambda: dmamap.pio_map(vma, 0xFFFF, 2), InvalidArgumentError


@_case("pio-larger-than-vma")
def _c35(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    env.t.need("port_io")
    vma = env.mmap(1)
    return lambda: dmamap.pio_map(vma, 0, PAGE_SIZE + 1), InvalidArgumentError


@_rule("bad_inputs_rejected", "bad inputs",
       "every documented bad input raises its documented error and changes nothing", tuple(BAD_INPUT_CASES))
def bad_inputs_rejected(t: Target, variant: str) -> None:
    chk = _Check("bad_inputs_rejected", variant)
    with t.machine() as m:
        dev = _device(m, bars=[0x2000], ports=[(0x300, 16)])
        mm = m.new_address_space()
        buf = dmamap.dma_alloc_coherent(dev, 4 * PAGE_SIZE)
        env = _Env(t, m, dev, mm, buf)
        m.phys_write(dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle) << PAGE_SHIFT,
                     _pattern("bad", buf.size))
        call, expected = BAD_INPUT_CASES[variant](env)
        before = _world(env)
        try:
            call()
        except expected:
            pass
        except Exception as exc:   # noqa: BLE001
            chk.fail(getattr(exc, "addr", 0), f"raised {type(exc).__name__} ({exc}), documented: "
                                              f"{expected.__name__}")
        else:
            chk.fail(0, f"accepted; documented: {expected.__name__}")
        after = _world(env)
        changed = [k for k in before if before[k] != after.get(k)] + [k for k in after if k not in before]
        if changed:
            chk.fail(0, "the refused call changed state: "
                        + "; ".join(f"{k}: {_short(before.get(k))} -> {_short(after.get(k))}" for k in changed))


def _short(v: object) -> str:
    if isinstance(v, bytes):
        return f"<{len(v)} bytes {v[:8].hex()}...>"
    return repr(v)


# ---------------------------------------------------------------------------
# rules: MMIO and port I/O


_WIDTHS = {1: ("read8", "write8"), 2: ("read16", "write16"), 4: ("read32", "write32"), 8: ("read64", "write64")}


def _reg_value(offset: int, width: int) -> int:
    return (0x0123456789ABCDEF ^ (offset * 0x9E3779B97F4A7C15)) & ((1 << (8 * width)) - 1)


@_rule("mmio_width_exact", "I/O",
       "an MMIO mapping is uncached and each access makes exactly one device callback at its width",
       ("uc", "wc"))
def mmio_width_exact(t: Target, variant: str) -> None:
    chk = _Check("mmio_width_exact", variant)
    log: list[tuple[Any, ...]] = []

    def rd(off: int, size: int) -> int:
        log.append(("read", off, size))
        return _reg_value(off, size)

    def wr(off: int, size: int, value: int) -> None:
        log.append(("write", off, size, value))

    with t.machine() as m:
        dev = _device(m, bars=[Bar(0x2000, read=rd, write=wr)])
        base, size = dev.bar(0)
        mm = m.new_address_space()
        vma = mm.mmap(size)
        dmamap.mmio_map(vma, base, size, cache=variant)
        for width, (rname, wname) in _WIDTHS.items():
            for off in (0, 3 * width, 0x1000 + 2 * width, size - width):
                va = vma.start + off
                value = _reg_value(off + 1, width)
                log.clear()
                getattr(mm, wname)(va, value)
                if log != [("write", off, width, value)]:
                    chk.fail(va, f"a {8 * width}-bit MMIO write made device callbacks {log}; expected exactly "
                                 f"[('write', {off:#x}, {width}, {value:#x})]")
                log.clear()
                got = getattr(mm, rname)(va)
                if log != [("read", off, width)]:
                    chk.fail(va, f"a {8 * width}-bit MMIO read made device callbacks {log}; expected exactly "
                                 f"[('read', {off:#x}, {width})]")
                if got != _reg_value(off, width):
                    chk.fail(va, f"a {8 * width}-bit MMIO read returned {got:#x}, the register holds "
                                 f"{_reg_value(off, width):#x}")
        for i in range(size >> PAGE_SHIFT):
            va = vma.start + (i << PAGE_SHIFT)
            e = _raw(m, mm, va)
            if e is None or e.pa != base + (i << PAGE_SHIFT):
                chk.fail(va, f"MMIO page {i} maps {'nothing' if e is None else hex(e.pa)}, not "
                             f"{base + (i << PAGE_SHIFT):#x}")
                return
            if e.cacheable or (variant == "uc" and e.cache not in DEVICE):
                chk.fail(va, f"MMIO mapped {e.cache} (PTE {e.entry:#x}); '{variant}' needs "
                             f"{'a Device / uncached type' if variant == 'uc' else 'an uncached type'}")
            if not e.special:
                chk.fail(va, f"MMIO mapped by a normal PTE {e.entry:#x}: registers have no page descriptor")


@_rule("pio_reachable", "I/O",
       "after pio_map, user address start+i reaches I/O port port+i with one callback at the access width",
       needs="port_io")
def pio_reachable(t: Target, variant: str) -> None:
    chk = _Check("pio_reachable")
    log: list[tuple[Any, ...]] = []

    def rd(off: int, size: int) -> int:
        log.append(("read", off, size))
        return _reg_value(off, size)

    def wr(off: int, size: int, value: int) -> None:
        log.append(("write", off, size, value))

    port, count = 0x300, 16
    with t.machine() as m:
        _device(m, ports=[PortRange(port, count, read=rd, write=wr)])
        mm = m.new_address_space()
        vma = mm.mmap(PAGE_SIZE)
        dmamap.pio_map(vma, port, count)
        for width in (1, 2, 4):
            for off in range(0, count, width):
                va = vma.start + off
                value = _reg_value(off + 7, width)
                log.clear()
                getattr(mm, _WIDTHS[width][1])(va, value)
                if log != [("write", off, width, value)]:
                    chk.fail(va, f"a {8 * width}-bit write to {va:#x} should reach port {port + off:#x} once; "
                                 f"device saw {log}")
                log.clear()
                got = getattr(mm, _WIDTHS[width][0])(va)
                if log != [("read", off, width)] or got != _reg_value(off, width):
                    chk.fail(va, f"a {8 * width}-bit read of {va:#x} should read port {port + off:#x} once "
                                 f"({_reg_value(off, width):#x}); device saw {log}, read returned {got:#x}")
        e = _raw(m, mm, vma.start)
        if e is not None and (e.cacheable or not e.special):
            chk.fail(vma.start, f"the port window is mapped {e.cache}, {'special' if e.special else 'normal'} "
                                f"PTE {e.entry:#x}: it must be an uncached PFN mapping")


# ---------------------------------------------------------------------------
# rules: large pages


@_rule("large_pages", "attributes",
       "a 2 MiB-aligned run maps with one 2 MiB entry with the right attribute, coherent and fully unmapped",
       LARGE_STRATEGIES, needs="large_pages")
def large_pages(t: Target, variant: str) -> None:
    strategy = t.strategy(variant)
    chk = _Check("large_pages", variant)
    span = 512
    with t.machine() as m:
        dev = _device(m)
        mm = m.new_address_space()
        buf = dmamap.dma_alloc_coherent(dev, 2 * span * PAGE_SIZE)
        pfn = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle)
        first = (-pfn) % span                      # first 2 MiB-aligned page of the buffer
        mp = map_buffer(dev, mm, buf, strategy, first_page=first, nr_pages=span)
        if mp.start % (span * PAGE_SIZE):
            chk.fail(mp.start, "a 2 MiB mmap is not 2 MiB-aligned")
        mm.read(mp.start, 64)
        e = _raw(m, mm, mp.start)
        if e is None:
            chk.fail(mp.start, "no valid user entry after a touch")
            return
        if e.level != 1:
            chk.fail(mp.start, f"a 2 MiB-aligned, 2 MiB run of pa {mp.pages[0][2]:#x} was mapped with a "
                               f"{e.page_size // 1024} KiB entry {e.entry:#x}, not one 2 MiB entry")
        check_attributes(chk, m, mp)
        check_coherent(chk, dev, mp, ("large", variant))
        vas = [mp.start, mp.start + 0x1FF000]
        dmamap.dma_munmap_coherent(mp.vma)
        for va in vas:
            if _raw(m, mm, va) is not None:
                chk.fail(va, "the 2 MiB entry survives dma_munmap_coherent")
            try:
                mm.read(va, 1)
            except AccessFault:
                continue
            chk.fail(va, "a read after dma_munmap_coherent of a large mapping succeeded (stale TLB)")


def _model_based(t: Target, variant: str) -> None:
    try:
        from dmamap.testing.stateful import run_model
    except ImportError as exc:
        raise RuleSkipped(f"the model-based rule needs hypothesis ({exc}); pip install 'dmamap[test]'") from None
    run_model(t, max_examples=t.model_examples, steps=t.model_steps, shrink=t.model_shrink)


RULES.append(Rule("model_based", "model",
                  "random sequences of alloc / map / access / DMA / unmap / free agree with a bytes-per-buffer "
                  "reference model (hypothesis state machine)", ("",), _model_based))

