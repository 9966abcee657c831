"""Area: bad inputs.  Every documented bad input (one case per variant in
:data:`BAD_INPUT_CASES`) raises its documented error and changes nothing:
allocations, mappings, buffer contents, memtypes and machine resources are
compared before and after the refused call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE
from dmamap.device import Device
from dmamap.dma import DmaBuffer, SgTable
from dmamap.errors import (
    BadPageError,
    DmaDoubleFreeError,
    DmaFreeError,
    DmaLeakError,
    DmaUseAfterFreeError,
    InvalidArgumentError,
    MmapError,
    OutOfMemoryError,
    PteBusyError,
    StrategyError,
    VirtToPageError,
    VmaNotMappedError,
)
from dmamap.machine import Machine
from dmamap.mm import AddressSpace, Vma
from dmamap.strategy import PREFAULT
from dmamap.testing.checks import make_device, pattern, resource_snapshot
from dmamap.testing.rule import Check, rule
from dmamap.testing.target import PAGE_STRATEGIES, RuleSkipped, Target

__all__ = ["BAD_INPUT_CASES", "bad_inputs_rejected"]


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

    def mmap(self, pages: int, pgoff: int = 0) -> Vma:
        v = self.mm.mmap(pages * PAGE_SIZE, offset=pgoff * PAGE_SIZE)
        self.vmas.append(v)
        return v


def _world(env: _Env) -> dict[str, Any]:
    m = env.m
    state: dict[str, Any] = dict(resource_snapshot(m))
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
    return lambda: env.mm.mmap(PAGE_SIZE, offset=100), InvalidArgumentError


@_case("mmap-offset-past-end")
def _c12(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    vma = env.mmap(1, env.buf.size // PAGE_SIZE)
    return lambda: dmamap.dma_mmap_coherent(env.dev, vma, *env.buf), MmapError


@_case("mmap-vma-larger-than-buffer")
def _c13(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    vma = env.mmap(8)
    return lambda: dmamap.dma_mmap_coherent(env.dev, vma, *env.buf), MmapError


@_case("mmap-vma-larger-than-rest-after-offset")
def _c14(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    vma = env.mmap(4, 1)
    return lambda: dmamap.dma_mmap_coherent(env.dev, vma, *env.buf), MmapError


@_case("mmap-unknown-strategy")
def _c15(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    vma = env.mmap(4)
    return lambda: dmamap.dma_mmap_coherent(env.dev, vma, *env.buf, strategy="eager"), StrategyError


@_case("mmap-fault-page-without-page-descriptors")
def _c16(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    if env.t.caps.page_descriptors:
        raise RuleSkipped(f"{env.t.name}'s coherent memory has page descriptors: 'fault-page' is legal")
    vma = env.mmap(4)
    return lambda: dmamap.dma_mmap_coherent(env.dev, vma, *env.buf, strategy=PAGE_STRATEGIES[0]), StrategyError


@_case("mmap-unmapped-vma")
def _c17(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    vma = env.mmap(4)
    env.mm.munmap(vma)
    return lambda: dmamap.dma_mmap_coherent(env.dev, vma, *env.buf), VmaNotMappedError


@_case("mmap-over-present-ptes")
def _c18(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    vma = env.mmap(4)
    dmamap.dma_mmap_coherent(env.dev, vma, *env.buf, strategy=PREFAULT.name)
    return lambda: dmamap.dma_mmap_coherent(env.dev, vma, *env.buf, strategy=PREFAULT.name), PteBusyError


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
    return lambda: dmamap.dma_alloc_coherent_sg(env.dev, 4 * PAGE_SIZE, max_chunk_pages=0), InvalidArgumentError


@_case("sg-exhausted-rolls-back")
def _c23(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    _need_sg(env)
    pages = (env.m.ram_size + env.m.sram_size) >> PAGE_SHIFT
    return (lambda: dmamap.dma_alloc_coherent_sg(env.dev, pages * PAGE_SIZE, max_chunk_pages=512, seed=1),
            OutOfMemoryError)


def _sg(env: _Env, pages: int = 6) -> SgTable:
    sg = dmamap.dma_alloc_coherent_sg(env.dev, pages * PAGE_SIZE, max_chunk_pages=2, seed=2)
    env.sgs.append(sg)
    return sg


@_case("sg-offset-past-end")
def _c24(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    _need_sg(env)
    sg, vma = _sg(env), env.mmap(1, 6)
    return lambda: dmamap.dma_mmap_coherent_sg(env.dev, vma, sg, nr_pages=1), MmapError


@_case("sg-window-past-end")
def _c25(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    _need_sg(env)
    sg, vma = _sg(env), env.mmap(2, 5)
    return lambda: dmamap.dma_mmap_coherent_sg(env.dev, vma, sg, nr_pages=2), MmapError


@_case("sg-window-larger-than-vma")
def _c26(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    _need_sg(env)
    sg, vma = _sg(env), env.mmap(2)
    return lambda: dmamap.dma_mmap_coherent_sg(env.dev, vma, sg, nr_pages=3), MmapError


@_case("sg-free-while-mapped")
def _c27(env: _Env) -> tuple[Callable[[], Any], type[BaseException]]:
    _need_sg(env)
    sg, vma = _sg(env), env.mmap(3, 2)
    dmamap.dma_mmap_coherent_sg(env.dev, vma, sg, nr_pages=3)
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


@rule("bad_inputs_rejected", "bad inputs",
      "every documented bad input raises its documented error and changes nothing", tuple(BAD_INPUT_CASES))
def bad_inputs_rejected(t: Target, variant: str) -> None:
    chk = Check("bad_inputs_rejected", variant)
    with t.machine() as m:
        dev = make_device(m, bars=[0x2000], ports=[(0x300, 16)])
        mm = m.new_address_space()
        buf = dmamap.dma_alloc_coherent(dev, 4 * PAGE_SIZE)
        env = _Env(t, m, dev, mm, buf)
        m.phys_write(dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle) << PAGE_SHIFT,
                     pattern("bad", buf.size))
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
