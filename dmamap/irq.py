"""Interrupt lines: a device raises a line, the handlers requested on it run
(kernel/irq/manage.c request_irq/free_irq, kernel/irq/handle.c, and the
kernel's spurious-interrupt accounting, kernel/irq/spurious.c note_interrupt).

Context: a handler runs synchronously on the thread that raised the line,
before ``raise_irq`` returns, with no lock of dmamap held (the line's
bookkeeping lock is released around the call).  When a device raises its
line from inside one of its register callbacks, the handler runs nested in
that access, which still holds the (recursive) lock of the address space the
access came through: the handler may use the kernel's accessors and that same
space, and must not wait for another thread.

Re-entrancy: a line is never re-entered.  Raising a line whose handlers are
running (on any thread) latches it pending (IRQS_PENDING), and the thread
running them replays the handlers once more before returning, as
handle_edge_irq does: no interrupt is lost, none runs nested in itself.

An exception a handler raises reaches the caller of ``raise_irq``; one that is
not a DmamapError (or TypeError) is wrapped in HandlerError, the original
chained, as for device register callbacks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dmamap.errors import DmamapError, HandlerError, InvalidArgumentError, IrqError
from dmamap.physmem import PhysicalMemory

__all__ = [
    "IRQ_NONE", "IRQ_HANDLED", "IRQ_WAKE_THREAD", "IRQF_SHARED", "NR_IRQS", "IrqStats", "IrqController", "request_irq",
    "request_threaded_irq", "free_irq", "irq_stats", "generic_handle_irq", "enable_irq", "disable_irq",
]

IRQ_NONE = 0
IRQ_HANDLED = 1
IRQ_WAKE_THREAD = 2
IRQF_SHARED = 0x00000080
#: Lines per machine (the number of descriptors; Linux sizes it per platform).
NR_IRQS = 1024
#: note_interrupt's rule: 99,900 unhandled of the last 100,000 disables the line ("nobody cared").
_SPURIOUS_WINDOW, _SPURIOUS_LIMIT = 100_000, 99_900

IrqHandler = Callable[[int, Any], int]


@dataclass
class _Action:
    handler: IrqHandler
    flags: int
    name: str
    dev_id: Any
    thread_fn: IrqHandler | None = None


@dataclass
class IrqStats:
    """What /proc/interrupts and the spurious-interrupt code count for one line."""

    count: int = 0          # times the line was raised (kstat_irqs)
    handled: int = 0        # raises some handler returned IRQ_HANDLED for
    unhandled: int = 0      # raises every handler returned IRQ_NONE for, or no handler exists (irqs_unhandled)
    spurious: int = 0       # raises with no handler requested at all
    bad_returns: int = 0    # handler return values that are no irqreturn_t ("bad irq return value")
    disabled: bool = False  # turned off after 99,900 of 100,000 went unhandled ("nobody cared")


@dataclass
class _Desc:
    actions: list[_Action] = field(default_factory=list)
    stats: IrqStats = field(default_factory=IrqStats)
    window_count: int = 0
    window_unhandled: int = 0
    depth: int = 0          # disable_irq nesting
    running: bool = False
    pending: int = 0


class IrqController:
    """One machine's interrupt descriptors (``machine.irq``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.descs: dict[int, _Desc] = {}

    def desc(self, irq: int) -> _Desc:
        d = self.descs.get(irq)
        if d is None:
            d = self.descs[irq] = _Desc()
        return d


def _controller(machine: object) -> IrqController:
    c = getattr(machine, "irq", None)
    if not isinstance(c, IrqController):
        raise TypeError(f"expected a Machine (with interrupt lines), got {type(machine).__name__}")
    return c


def check_irq(irq: int) -> int:
    if isinstance(irq, bool) or not isinstance(irq, int):
        raise TypeError(f"irq must be an int, not {type(irq).__name__}")
    if not 0 <= irq < NR_IRQS:
        raise IrqError(f"irq {irq} is not a line of this machine (0..{NR_IRQS - 1})")
    return irq


def _machine(machine: object) -> object:
    if not isinstance(machine, PhysicalMemory):
        raise TypeError(f"expected a Machine, got {type(machine).__name__}")
    machine._ptr()   # a closed machine says so
    return machine


def request_irq(machine: object, irq: int, handler: IrqHandler, flags: int, name: str, dev_id: Any) -> int:
    """Install ``handler(irq, dev_id)`` on line ``irq``; returns 0.  A line may
    carry several handlers only if every one asks IRQF_SHARED with a non-None
    ``dev_id`` (as the kernel requires)."""
    if not callable(handler):
        raise TypeError("request_irq: handler must be callable")
    return request_threaded_irq(machine, irq, handler, None, flags, name, dev_id)


def _default_primary(irq: int, dev_id: Any) -> int:
    """irq_default_primary_handler: wake the thread."""
    return IRQ_WAKE_THREAD


def request_threaded_irq(machine: object, irq: int, handler: IrqHandler | None, thread_fn: IrqHandler | None,
                         flags: int, name: str, dev_id: Any) -> int:
    """request_irq with a threaded half: when ``handler`` (default: one that
    always does) returns IRQ_WAKE_THREAD, ``thread_fn(irq, dev_id)`` runs once
    every primary handler of the line has returned, on the same thread (the
    emulation has no IRQ threads), and its return value is the interrupt's."""
    _machine(machine)
    check_irq(irq)
    if handler is None and thread_fn is None:
        raise IrqError(f"request_threaded_irq({irq}): neither a handler nor a thread_fn (-EINVAL)")
    for fn in (handler, thread_fn):
        if fn is not None and not callable(fn):
            raise TypeError("request_threaded_irq: handler and thread_fn must be callable")
    if isinstance(flags, bool) or not isinstance(flags, int) or flags < 0:
        raise InvalidArgumentError(f"request_irq: flags must be a non-negative int, not {flags!r}")
    if not isinstance(name, str):
        raise TypeError(f"request_irq: name must be a str, not {type(name).__name__}")
    shared = bool(flags & IRQF_SHARED)
    if shared and dev_id is None:
        raise IrqError(f"request_irq({irq}, {name!r}): IRQF_SHARED needs a dev_id to tell handlers apart (-EINVAL)")
    c = _controller(machine)
    with c.lock:
        d = c.desc(irq)
        if d.actions:
            if not shared or not all(a.flags & IRQF_SHARED for a in d.actions):
                raise IrqError(f"request_irq({irq}, {name!r}): line already taken by "
                               f"{', '.join(repr(a.name) for a in d.actions)} and not shared by all (-EBUSY)")
            if any(a.dev_id is dev_id for a in d.actions):
                raise IrqError(f"request_irq({irq}, {name!r}): dev_id already has a handler on this line")
        d.actions.append(_Action(handler or _default_primary, flags, name, dev_id, thread_fn))
    return 0


def free_irq(machine: object, irq: int, dev_id: Any) -> str:
    """Remove the handler ``dev_id`` installed on ``irq``; returns its name (as
    the kernel's free_irq returns the devname)."""
    _machine(machine)
    check_irq(irq)
    c = _controller(machine)
    with c.lock:
        d = c.descs.get(irq)
        for i, a in enumerate(d.actions if d else []):
            if a.dev_id is dev_id:
                del d.actions[i]   # type: ignore[union-attr]
                return a.name
    raise IrqError(f"free_irq({irq}): no handler with this dev_id on the line (Trying to free already-free IRQ)")


def disable_irq(machine: object, irq: int) -> None:
    """Mask the line (nesting); raises meanwhile are latched and run at enable_irq."""
    _machine(machine)
    c = _controller(machine)
    with c.lock:
        c.desc(check_irq(irq)).depth += 1


def enable_irq(machine: object, irq: int) -> None:
    """Undo one disable_irq; at depth zero a latched raise is delivered now."""
    _machine(machine)
    c = _controller(machine)
    with c.lock:
        d = c.desc(check_irq(irq))
        if d.depth == 0:
            raise IrqError(f"enable_irq({irq}): unbalanced enable (the line is not disabled)")
        d.depth -= 1
        replay = d.depth == 0 and d.pending > 0 and not d.running
    if replay:
        generic_handle_irq(machine, irq, _count=False)


def irq_stats(machine: object, irq: int) -> IrqStats:
    """A snapshot of the counters of line ``irq``."""
    c = _controller(_machine(machine))
    with c.lock:
        s = c.desc(check_irq(irq)).stats
        return IrqStats(s.count, s.handled, s.unhandled, s.spurious, s.bad_returns, s.disabled)


def generic_handle_irq(machine: object, irq: int, *, _count: bool = True) -> None:
    """Deliver line ``irq`` (what a device's raise_irq does): run its handlers
    in request order, then account the result as note_interrupt does."""
    _machine(machine)
    check_irq(irq)
    c = _controller(machine)
    with c.lock:
        d = c.desc(irq)
        if _count:
            d.stats.count += 1
            d.pending += 1
        if d.running or d.depth or d.stats.disabled:
            return   # latched: the running thread (or enable_irq) replays it
        d.running = True
    try:
        while True:
            with c.lock:
                if not d.pending or d.depth or d.stats.disabled:
                    d.running = False
                    return
                d.pending -= 1
                actions = list(d.actions)
            ret = IRQ_NONE
            bad = 0
            woken = []
            for a in actions:
                r = _call(a, a.handler, irq)
                if isinstance(r, bool) or not isinstance(r, int) or r & ~(IRQ_HANDLED | IRQ_WAKE_THREAD) or \
                        (r & IRQ_WAKE_THREAD and a.thread_fn is None):   # warn_no_thread
                    bad += 1
                    continue
                if r & IRQ_WAKE_THREAD:
                    woken.append(a)
                ret |= r & IRQ_HANDLED
            for a in woken:   # irq_thread: after the hard handlers, with the line's accounting pending
                r = _call(a, a.thread_fn, irq)   # type: ignore[arg-type]
                if isinstance(r, bool) or not isinstance(r, int) or r & ~IRQ_HANDLED:
                    bad += 1
                    continue
                ret |= r
            with c.lock:
                _note_interrupt(d, ret, bad, bool(actions))
    except BaseException:
        with c.lock:
            d.running = False
        raise


def _call(a: _Action, fn: IrqHandler, irq: int) -> Any:
    try:
        return fn(irq, a.dev_id)
    except (DmamapError, TypeError):
        raise
    except Exception as exc:   # as a device callback's: named, the original chained
        raise HandlerError(f"interrupt handler {a.name!r} on irq {irq} raised {type(exc).__name__}: {exc}") from exc


def _note_interrupt(d: _Desc, ret: int, bad: int, any_action: bool) -> None:
    s = d.stats
    s.bad_returns += bad
    if not any_action:
        s.spurious += 1
    if ret & IRQ_HANDLED:
        s.handled += 1
    else:
        s.unhandled += 1
        d.window_unhandled += 1
    d.window_count += 1
    if d.window_count >= _SPURIOUS_WINDOW:
        if d.window_unhandled > _SPURIOUS_LIMIT:
            s.disabled = True   # "irq N: nobody cared", the line is turned off
        d.window_count = d.window_unhandled = 0
