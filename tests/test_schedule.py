"""The polling policy alone (``worker.schedule``; who ``worker.policy.Slots`` wakes):
pure, with time passed in."""

from __future__ import annotations

from itertools import pairwise
from types import SimpleNamespace

from qdone.worker.policy import Slots
from qdone.worker.queues import QueueRef
from qdone.worker.schedule import Schedule, _phase, check_period
from qdone.worker.sweep import BURST, SWEEP_RATE


def refs(n: int) -> list[QueueRef]:
    return [QueueRef(f"u{i}", f"q{i}", False, 1, 1_209_600) for i in range(n)]


def schedule(concurrency: int, **kw: object) -> Schedule:
    settings: dict[str, object] = {
        "wait_time": 20,
        "idle_check": 60,
        "active_only": False,
        "drain": False,
        "short_wait": 1,
        "drain_wait": 1,
    }
    settings.update(kw)
    return Schedule(concurrency=concurrency, **settings)  # type: ignore[arg-type]


def test_check_period_sits_between_wait_time_and_the_bound() -> None:
    period = [
        check_period(queues=n, wait_time=20, idle_check=60, active_only=False)
        for n in (1, 10, 40, 500, 10_000)
    ]
    assert period == [20, 20, 40, 58, 58]
    assert check_period(queues=500, wait_time=20, idle_check=60, active_only=True) == 20
    assert check_period(queues=500, wait_time=0, idle_check=60, active_only=True) == 1


def test_queues_take_turns_never_back_to_the_one_that_just_polled() -> None:
    s = schedule(1)
    s.set_queues(refs(2), 0.0)  # two queues, one slot: idle queues are checked
    for url in ("u0", "u1"):
        s.checked(url, 3, 0, 0.0, 0)  # both hold work
    order = []
    for _ in range(6):
        pick = s.pick(1, 0.0, 0)
        assert pick is not None and pick.n == 1 and pick.wait == 1
        order.append(pick.queue.url)
        s.received(pick.queue.url, 1, 1, 0.0, 0)
    assert order == ["u0", "u1"] * 3


def test_every_queue_long_polls_when_each_can_hold_a_slot() -> None:
    s = schedule(4)
    s.set_queues(refs(3), 0.0)
    picks = [s.pick(4 - i, 0.0, 0) for i in range(3)]
    assert [p.wait for p in picks if p] == [20, 20, 20]
    assert s.pick(1, 0.0, 0) is None  # each queue has its receive in flight
    assert s.due_checks(0.0, 0, 10) == []  # and none is checked


def test_with_more_queues_than_slots_idle_ones_are_checked_once_a_period() -> None:
    s = schedule(1)
    s.set_queues(refs(100), 0.0)
    assert s.pick(1, 0.0, 0) is None  # nothing known: no receive
    checks = []
    for second in range(0, 150):
        due = s.due_checks(float(second), 0, 1_000)
        for q in due:
            s.checked(q.url, 0, 0, float(second), 0)
        checks += [q.url for q in due]
    per_queue = {url: checks.count(url) for url in set(checks)}
    assert len(per_queue) == 100
    assert set(per_queue.values()) <= {2, 3}  # 150 s at one check per 58 s


def test_a_woken_queue_is_received_from_with_a_short_wait() -> None:
    s = schedule(1)
    s.set_queues(refs(50), 0.0)
    assert s.wake("u7")
    assert not s.wake("elsewhere")
    pick = s.pick(1, 0.0, 0)
    assert pick is not None and pick.queue.url == "u7" and pick.wait == 1


# -- the start-up sweep: each idle queue checked once soon, then at its phase -------------

STEP = 1 / SWEEP_RATE  # s: how often the simulated checkers look at the time


def checks_over(s: Schedule, start: float, end: float) -> dict[str, list[float]]:
    """Check times of each queue from ``start`` to ``end``, every queue seen empty."""
    seen: dict[str, list[float]] = {}
    for i in range(round((end - start) / STEP)):
        now = start + i * STEP
        for q in s.due_checks(now, 0, 1_000):
            s.checked(q.url, 0, 0, now, 0)
            seen.setdefault(q.url, []).append(now)
    return seen


def test_at_start_each_idle_queue_is_checked_soon_at_a_bounded_rate() -> None:
    s = schedule(1)
    s.set_queues(refs(500), 0.0)  # a check period of 58 s
    seen = checks_over(s, 0.0, 60.0)
    first = sorted(times[0] for times in seen.values())
    assert len(first) == 500
    # Swept from the furthest phase while the phases take the nearest: they meet after
    # 500 / (20 + 500 / 58) s, where today the last queue waited 58 s.
    assert first[-1] < 500 / (SWEEP_RATE + 500 / 58) + 0.5
    per_second = [sum(k <= t < k + 1 for t in first) for k in range(18)]
    assert max(per_second) <= SWEEP_RATE * (1 + BURST) + 12  # the phases: 8.6 a second
    # Issue 12's first minute: each checked again a period less 2 s after the sweep.
    calls = sum(len(times) for times in seen.values())
    assert 500 <= calls <= 650


def test_swept_queues_are_seen_within_a_period_and_meet_their_phase_again() -> None:
    s = schedule(1)
    queues = refs(30)
    s.set_queues(queues, 0.0)
    period = s.period()  # 30 s
    seen = checks_over(s, 0.0, 600.0)
    assert max(times[0] for times in seen.values()) < 2  # 30 queues at 25 a second
    for q in queues:
        times = seen[q.url]
        gaps = [b - a for a, b in pairwise(times)]
        assert max(gaps) <= period + STEP
        # Back on the phase within 15 periods (2 s nearer each), on it from then on.
        off_phase = [(t - _phase(q.url) * period) % period for t in times if t >= 450]
        assert max(off_phase) < 2 * STEP, q.url
        # The sweep's check is one more than the phases alone would have made.
        assert len(times) <= 600 / period + 2


def test_queues_found_by_a_relisting_are_swept_and_the_others_left_alone() -> None:
    s = schedule(1)
    s.set_queues(refs(100), 0.0)
    checks_over(s, 0.0, 30.0)
    s.set_queues(refs(120), 30.0)  # a wildcard's listing found 20 more
    seen = checks_over(s, 30.0, 33.0)
    assert set(seen) == {f"u{i}" for i in range(100, 120)}


def test_no_sweep_when_every_queue_is_long_polled_or_draining() -> None:
    long_polled = schedule(10)
    long_polled.set_queues(refs(5), 0.0)
    draining = schedule(1, drain=True)
    draining.set_queues(refs(5), 0.0)
    draining.checked("u0", 0, 0, 0.0, 0)
    assert long_polled.due_checks(0.0, 0, 100) == []
    # Draining confirms every queue empty at once anyway; none twice.
    assert "u0" not in {q.url for q in draining.due_checks(0.0, 0, 100)}


def test_no_check_comes_due_while_checks_are_not_possible() -> None:
    # What lets a worker leave its checkers asleep while jobs run (``Slots.watched``).
    for drain in (False, True):
        s = schedule(2, drain=drain)
        s.set_queues(refs(2), 0.0)  # every queue long-polled
        assert not s.checks_possible()
        for url in ("u0", "u1"):
            s.received(url, 1, 0, 0.0, s.epoch)
        s.epoch += 1  # a job ended
        for now in (0.0, 1.5, 30.0, 1000.0):
            assert all(s.due_checks(now, running, 10) == [] for running in (0, 1, 2))
        s.checked("u0", 0, 3, 1.0, s.epoch)  # delayed messages: draining, seen every second
        assert s.checks_possible() is drain
        assert [q.url for q in s.due_checks(2.0, 1, 10)] == (["u0"] if drain else [])
    s = schedule(1)
    s.set_queues(refs(2), 0.0)  # more queues than slots: idle ones are checked
    assert s.checks_possible()


def test_slots_wake_the_watchers_only_when_a_change_may_concern_them() -> None:
    slots = Slots(2)
    woken: list[int] = []
    slots.watch = SimpleNamespace(notify_all=lambda: woken.append(slots.used))  # type: ignore[assignment]
    slots.watched = lambda: False
    for _ in range(2):
        slots.reserve(1)
        slots.settle(1, 1)  # a job starts: one more running
    slots.release(1)
    assert woken == []  # a job still runs: nothing they wait for changed
    slots.release(1)
    assert woken == [0]  # none runs: a drain may be over
    slots.reserve(1)
    slots.settle(1, 1)
    slots.watched = lambda: True  # e.g. stopping, or checks can come due
    slots.notify_all()
    slots.watched = lambda: False
    slots.wake()  # a stop, new queues: everyone
    assert woken == [0, 1, 1]
