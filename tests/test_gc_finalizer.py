"""A garbage collection can run an address space's finalizer at any allocation,
including inside the machine state's own critical sections: it must not deadlock.
(Found by the README's longer fuzz: a collection during Machine.close() ran
free_space on the thread that held the state lock.)"""

from __future__ import annotations

import subprocess
import sys

# Run in a child: a regression is a deadlocked thread, which must fail the test, not hang the session.
SCRIPT = """
import gc, dmamap
m = dmamap.Machine("x86_64", ram=1 << 20)
mm = m.new_address_space()
mm.mmap(4096)
p = mm._ptr()
m._forget_space(mm)          # as Machine.close() drops its spaces before retiring the state
cycle = [mm]
cycle.append(cycle)          # only the cyclic collector can free it
del mm, cycle
with m._state.lock:          # as retire() and add_space() hold it when an allocation collects
    gc.collect()             # the finalizer only queues: it takes no lock
    assert p in m._state.dead
m._state.reap()              # the next safe point frees it
assert p not in m._state.as_ptrs
m.close()
print("ok")
"""


def test_finalizer_inside_a_state_critical_section() -> None:
    """An AddressSpace collected while its thread holds the state lock is queued, then freed, never
    deadlocked."""
    try:
        res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("the finalizer deadlocked on the machine state's lock") from None
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
