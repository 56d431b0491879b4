"""The Progress Monitor's consecutive-decline rule on hand-made similarity sequences."""

from __future__ import annotations

import pytest

from vlnkit.agents.vlncm.progress import ProgressMonitor


def feed(monitor: ProgressMonitor, values: list[float]) -> list[bool]:
    return [monitor.update(v) for v in values]


def test_two_consecutive_falls_pass_the_spot() -> None:
    monitor = ProgressMonitor(num_spots=3, window=2)
    assert feed(monitor, [0.5, 0.6, 0.55, 0.5]) == [False, False, False, True]
    assert monitor.current == 1
    assert monitor.history == []


def test_a_rise_between_falls_restarts_the_count() -> None:
    monitor = ProgressMonitor(num_spots=2, window=2)
    assert not any(feed(monitor, [0.5, 0.4, 0.45, 0.4, 0.42]))
    assert monitor.current == 0


def test_an_equal_value_is_not_a_fall() -> None:
    monitor = ProgressMonitor(num_spots=2, window=2)
    assert not any(feed(monitor, [0.5, 0.4, 0.4, 0.4]))


@pytest.mark.parametrize("window, passes_at", [(1, 1), (3, 3), (4, None)])
def test_the_window_sets_how_many_falls_it_takes(window: int, passes_at: int | None) -> None:
    monitor = ProgressMonitor(num_spots=2, window=window)
    passed = feed(monitor, [0.9, 0.8, 0.7, 0.6])
    first = passed.index(True) if any(passed) else None
    assert first == passes_at


def test_falls_smaller_than_min_drop_do_not_count() -> None:
    monitor = ProgressMonitor(num_spots=2, window=2, min_drop=0.05)
    assert not any(feed(monitor, [0.5, 0.48, 0.46, 0.44]))
    assert feed(monitor, [0.3, 0.2]) == [False, True]


def test_the_monitor_is_done_after_the_last_spot() -> None:
    monitor = ProgressMonitor(num_spots=2, window=1)
    feed(monitor, [0.5, 0.4])
    monitor.advance()
    assert monitor.done
    assert monitor.update(0.1) is False
    monitor.reset(1)
    assert not monitor.done and monitor.current == 0


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ProgressMonitor(num_spots=1, window=0)
