"""The benchmark's ratio targets run end to end (their speed is judged by `dmamap bench`,
not here): each yields a ratio, a PASS or MISS against its goal, and the figures it
was computed from."""

from __future__ import annotations

import pytest

from dmamap.bench import targets
from dmamap.bench.results import Target


def _judged(t: Target) -> None:
    assert t.status in ("PASS", "MISS") and t.value > 0
    op, bound = targets.RATIO_GOALS[t.details["key"]]
    assert (t.status == "PASS") == (t.value <= bound if op == "≤" else t.value >= bound)


@pytest.mark.parametrize("shared", [True, False])
def test_threads_target_reports_its_machine_reference(shared: bool) -> None:
    t = targets.target_threads("x86", 1, shared=shared)
    _judged(t)
    speedup, machine = t.details["speedup"], t.details["machine_speedup"]
    assert speedup > 0 and machine > 0
    assert 0 < t.value <= max(2.0, speedup)   # scaled by the machine's parallelism, at most to 2x
    assert "share-nothing" in t.measured


def test_share_nothing_reference_loads_the_pages_the_faults_load() -> None:
    """The thread target's machine reference is the faults' memory traffic without the
    emulation: one load per page of the thread's own buffer, in C; bad ranges are refused."""
    import dmamap
    from dmamap._binding import bench as cbench
    from dmamap.errors import InvalidArgumentError, PhysicalAddressError

    with dmamap.Machine("x86", ram=64 << 20) as m:
        page = m.alloc_pages(256)
        assert cbench.load_pages(m._ptr(), page.phys_addr, 256) > 0
        assert cbench.load_pages(m._ptr(), page.phys_addr, 0) >= 0
        with pytest.raises(InvalidArgumentError):
            cbench.load_pages(m._ptr(), page.phys_addr + 8, 1)
        with pytest.raises(PhysicalAddressError):
            cbench.load_pages(m._ptr(), m.ram_base + (64 << 20) - 4096, 2)   # runs past the RAM
        work = targets._share_nothing(m, [page.phys_addr, page.phys_addr], 256, 2)
        work(0)
        work(1)


def test_thread_speedup_scaled_by_the_machines() -> None:
    assert targets._scaled(1.8, 2.1) == 1.8        # the machine gave two CPUs: as measured
    assert targets._scaled(0.9, 1.0) == 1.8        # it gave one: 0.9 of what it gave
    assert targets._scaled(1.5, 1.2) == 2.0        # capped


def test_register_targets_compare_with_struct_on_a_plain_mmap() -> None:
    ts = targets.target_mmio32(1)
    assert [t.details["key"] for t in ts] == ["read32", "write32"]
    for t in ts:
        _judged(t)
        assert t.details["cffi_floor"] > 0


def test_import_target_runs_with_bytecode_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    t = targets.target_import(1)
    _judged(t)
    assert "bytecode cached" in t.measured


def test_sweep_counts_each_distinct_experiment_once() -> None:
    """A density touching no more pages than a higher one, and the random order of a
    one-page touch, repeat an experiment already in the sweep: they are left out."""
    from dmamap.bench.config import QUICK, make_config
    from dmamap.bench.harness import touched_pages
    from dmamap.bench.sweep import make_patterns, sweep_points

    points = sweep_points(QUICK)
    assert len(points) == 21 and len(set(points)) == 21
    assert [p for p in points if p[0] == 4096] == [(4096, 1.0, "seq")]   # one page: one point
    for size in {s for s, _d, _o in points}:
        counts = [touched_pages(size >> 12, d) for s, d, o in points if s == size and o == "seq"]
        assert counts == sorted(set(counts), reverse=True)   # every density touches a new number of pages
    assert list(make_patterns(QUICK)) == points
    only_random = make_config(quick=True, orders=["random"], sizes=["4K"])
    assert sweep_points(only_random) == [(4096, 1.0, "random")]   # the first order asked for is kept


def test_disagreement_shows_the_calibrations_own_host_ratio() -> None:
    from dmamap.bench.model import Profile
    from dmamap.bench.predict import calibration_ratio

    run = {"size": 1 << 20, "density": 0.3, "order": "seq"}
    prof = Profile("p", {}, fit={"runs": [{**run, "kind": "store-touch", "ns": {"median": 115.0}},
                                          {**run, "kind": "populate", "ns": {"median": 100.0}}]})
    assert calibration_ratio(prof, 1 << 20, 0.3, "seq") == pytest.approx(1.15)
    assert calibration_ratio(prof, 1 << 20, 0.3, "random") is None   # a point the calibration did not run
    assert calibration_ratio(None, 1 << 20, 0.3, "seq") is None
