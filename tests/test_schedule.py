"""The polling policy alone (``worker.schedule``): pure, with time passed in."""

from __future__ import annotations

from qdone.worker.queues import QueueRef
from qdone.worker.schedule import Schedule, check_period


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
