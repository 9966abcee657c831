"""Interrupts: request_irq/free_irq, Device.raise_irq, the handler context,
and the spurious accounting of kernel/irq/spurious.c note_interrupt."""

from __future__ import annotations

import threading

import pytest

import dmamap
from dmamap import irq as irqmod


@pytest.fixture
def mach() -> dmamap.Machine:
    with dmamap.Machine("x86", ram=16 << 20) as m:
        yield m


def test_handler_runs_synchronously_with_its_dev_id(mach: dmamap.Machine) -> None:
    dev = dmamap.Device(mach, "d", bars=[4096], irqs=[5, 6])
    seen: list[tuple[int, object, str]] = []
    dmamap.request_irq(mach, 6, lambda n, d: seen.append((n, d, threading.current_thread().name)) or
                       dmamap.IRQ_HANDLED, 0, "d", dev)
    dev.raise_irq(6)
    assert seen == [(6, dev, threading.current_thread().name)]
    s = dmamap.irq_stats(mach, 6)
    assert (s.count, s.handled, s.unhandled, s.spurious) == (1, 1, 0, 0)
    assert dmamap.free_irq(mach, 6, dev) == "d"
    dev.raise_irq(6)   # no handler now: spurious, unhandled
    s = dmamap.irq_stats(mach, 6)
    assert (s.count, s.handled, s.unhandled, s.spurious) == (2, 1, 1, 1)


def test_shared_line_runs_every_handler_and_counts_irq_none(mach: dmamap.Machine) -> None:
    a = dmamap.Device(mach, "a", irqs=[9])
    b = dmamap.Device(mach, "b", irqs=[9])
    calls: list[str] = []
    dmamap.request_irq(mach, 9, lambda n, d: calls.append("a") or dmamap.IRQ_NONE, dmamap.IRQF_SHARED, "a", a)
    dmamap.request_irq(mach, 9, lambda n, d: calls.append("b") or dmamap.IRQ_HANDLED, dmamap.IRQF_SHARED, "b", b)
    a.raise_irq()
    assert calls == ["a", "b"]
    dmamap.free_irq(mach, 9, b)
    a.raise_irq()
    s = dmamap.irq_stats(mach, 9)
    assert (s.count, s.handled, s.unhandled, s.spurious) == (2, 1, 1, 0)


def test_bad_return_values_are_counted(mach: dmamap.Machine) -> None:
    d = dmamap.Device(mach, "d", irqs=[3])
    dmamap.request_irq(mach, 3, lambda n, dev: "yes", 0, "d", d)   # type: ignore[arg-type, return-value]
    d.raise_irq()
    s = dmamap.irq_stats(mach, 3)
    assert s.bad_returns == 1 and s.unhandled == 1


def test_a_line_nobody_handles_is_disabled_after_99900_of_100000(mach: dmamap.Machine) -> None:
    d = dmamap.Device(mach, "d", irqs=[4])
    dmamap.request_irq(mach, 4, lambda n, dev: dmamap.IRQ_NONE, 0, "d", d)
    for _ in range(100_000):
        irqmod.generic_handle_irq(mach, 4)
    s = dmamap.irq_stats(mach, 4)
    assert s.disabled and s.unhandled == 100_000
    calls: list[int] = []
    dmamap.free_irq(mach, 4, d)
    dmamap.request_irq(mach, 4, lambda n, dev: calls.append(n) or dmamap.IRQ_HANDLED, 0, "d", d)
    d.raise_irq()
    assert calls == []   # off until the machine is reset, as the kernel's "nobody cared"


def test_a_raise_inside_the_handler_is_replayed_not_nested(mach: dmamap.Machine) -> None:
    d = dmamap.Device(mach, "d", irqs=[7])
    depth = [0]
    log: list[int] = []

    def handler(n: int, dev: object) -> int:
        depth[0] += 1
        log.append(depth[0])
        if len(log) < 3:
            d.raise_irq()          # latched pending, replayed after we return
        depth[0] -= 1
        return dmamap.IRQ_HANDLED

    dmamap.request_irq(mach, 7, handler, 0, "d", d)
    d.raise_irq()
    assert log == [1, 1, 1]
    assert dmamap.irq_stats(mach, 7).count == 3


def test_disable_irq_latches_and_enable_delivers(mach: dmamap.Machine) -> None:
    d = dmamap.Device(mach, "d", irqs=[8])
    calls: list[int] = []
    dmamap.request_irq(mach, 8, lambda n, dev: calls.append(n) or dmamap.IRQ_HANDLED, 0, "d", d)
    dmamap.disable_irq(mach, 8)
    d.raise_irq()
    assert calls == []
    dmamap.enable_irq(mach, 8)
    assert calls == [8]
    with pytest.raises(dmamap.IrqError):
        dmamap.enable_irq(mach, 8)


def test_handler_exception_propagates_and_the_line_stays_usable(mach: dmamap.Machine) -> None:
    d = dmamap.Device(mach, "d", irqs=[2])

    def boom(n: int, dev: object) -> int:
        raise RuntimeError("handler bug")

    dmamap.request_irq(mach, 2, boom, 0, "d", d)
    with pytest.raises(dmamap.HandlerError) as info:
        d.raise_irq()
    assert isinstance(info.value.__cause__, RuntimeError)
    dmamap.free_irq(mach, 2, d)
    dmamap.request_irq(mach, 2, lambda n, dev: dmamap.IRQ_HANDLED, 0, "d", d)
    d.raise_irq()
    assert dmamap.irq_stats(mach, 2).handled == 1


def test_misuse_raises_irq_error_and_changes_nothing(mach: dmamap.Machine) -> None:
    d = dmamap.Device(mach, "d", irqs=[1])
    h = lambda n, dev: dmamap.IRQ_HANDLED  # noqa: E731
    dmamap.request_irq(mach, 1, h, 0, "d", d)
    with pytest.raises(dmamap.IrqError):
        dmamap.request_irq(mach, 1, h, 0, "e", mach)              # busy, not shared
    with pytest.raises(dmamap.IrqError):
        dmamap.request_irq(mach, 11, h, dmamap.IRQF_SHARED, "e", None)   # shared needs a dev_id
    with pytest.raises(dmamap.IrqError):
        dmamap.request_irq(mach, dmamap.NR_IRQS, h, 0, "e", d)
    with pytest.raises(TypeError):
        dmamap.request_irq(mach, 12, "not callable", 0, "e", d)   # type: ignore[arg-type]
    with pytest.raises(dmamap.IrqError):
        dmamap.free_irq(mach, 1, mach)                             # not its dev_id
    with pytest.raises(dmamap.IrqError):
        d.raise_irq(2)                                             # not wired to line 2
    with pytest.raises(dmamap.IrqError):
        dmamap.Device(mach, "quiet").raise_irq()
    with pytest.raises(dmamap.IrqError):
        dmamap.Device(mach, "bad", irqs=[-1])
    assert "bad" not in mach.devices
    d.raise_irq()
    assert dmamap.irq_stats(mach, 1).handled == 1


def test_closed_machine_refuses(mach: dmamap.Machine) -> None:
    d = dmamap.Device(mach, "d", irqs=[1])
    mach.close()
    with pytest.raises(dmamap.MachineClosedError):
        dmamap.request_irq(mach, 1, lambda n, dev: 1, 0, "d", d)
    with pytest.raises(dmamap.MachineClosedError):
        d.raise_irq()


def test_a_dropped_machine_is_collected_with_its_kernel_side_state() -> None:
    """Interrupt handlers, ioremaps and vmalloc areas keep no machine alive."""
    import gc
    import weakref

    m = dmamap.Machine("arm", ram=16 << 20)
    dev = dmamap.Device(m, "d", bars=[4096], irqs=[3])
    io = dmamap.ioremap(m, *dev.bar(0))
    dmamap.request_irq(m, 3, lambda n, cookie: dmamap.readl(cookie) and dmamap.IRQ_HANDLED, 0, "d", io)
    dmamap.vmalloc_user(m, 2 * 4096)
    dev.raise_irq()
    ref = weakref.ref(m)
    del m, dev, io
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("via", ["kernel", "user"])
def test_a_device_raising_from_its_register_callback_runs_the_handler_nested(mach: dmamap.Machine, via: str) -> None:
    """A doorbell write makes the device interrupt at once; the handler reads the
    device's status through the kernel's ioremap while the access is in progress."""
    state = {"status": 0}
    dev: list[dmamap.Device] = []

    def write(off: int, size: int, value: int) -> None:
        state["status"] = value
        dev[0].raise_irq()

    dev.append(dmamap.Device(mach, "db", bars=[dmamap.Bar(4096, read=lambda off, size: state["status"], write=write)],
                               irqs=[12]))
    io = dmamap.ioremap(mach, *dev[0].bar(0))
    seen: list[int] = []
    dmamap.request_irq(mach, 12, lambda n, cookie: seen.append(dmamap.readl(cookie)) or dmamap.IRQ_HANDLED, 0,
                       "db", io)
    if via == "kernel":
        dmamap.writel(0x55, io)
    else:
        mm = mach.new_address_space()
        vma = mm.mmap(4096)
        dmamap.mmio_map(vma, dev[0].bar(0)[0], 4096)
        mm.write32(vma.start, 0x55)
    assert seen == [0x55]


def test_threaded_handlers_run_after_every_primary_handler(mach: dmamap.Machine) -> None:
    a = dmamap.Device(mach, "a", irqs=[13])
    b = dmamap.Device(mach, "b", irqs=[13])
    order: list[str] = []
    dmamap.request_threaded_irq(mach, 13, lambda n, d: order.append("a-hard") or dmamap.IRQ_WAKE_THREAD,
                                lambda n, d: order.append("a-thread") or dmamap.IRQ_HANDLED,
                                dmamap.IRQF_SHARED, "a", a)
    dmamap.request_irq(mach, 13, lambda n, d: order.append("b-hard") or dmamap.IRQ_NONE, dmamap.IRQF_SHARED, "b", b)
    a.raise_irq()
    assert order == ["a-hard", "b-hard", "a-thread"]
    assert dmamap.irq_stats(mach, 13).handled == 1
    dmamap.free_irq(mach, 13, a)
    dmamap.free_irq(mach, 13, b)
    # no primary handler: the default one wakes the thread
    dmamap.request_threaded_irq(mach, 13, None, lambda n, d: order.append("only-thread") or dmamap.IRQ_HANDLED,
                                0, "a", a)
    a.raise_irq()
    assert order[-1] == "only-thread"
    dmamap.free_irq(mach, 13, a)
    # IRQ_WAKE_THREAD with no thread_fn is a bad return (the kernel's warn_no_thread)
    dmamap.request_irq(mach, 13, lambda n, d: dmamap.IRQ_WAKE_THREAD, 0, "a", a)
    a.raise_irq()
    s = dmamap.irq_stats(mach, 13)
    assert (s.handled, s.bad_returns, s.unhandled) == (2, 1, 1)
    with pytest.raises(dmamap.IrqError):
        dmamap.request_threaded_irq(mach, 14, None, None, 0, "x", a)
