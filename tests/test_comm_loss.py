"""device.comm_loss: raised when the silence is certain to reach comm_loss_s, for
every poll period; short silences are ridden through; one raise per outage."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from edge.codes import RAISE, CLEAR, code_of
from edge.detect.common import PARAMS, CommLoss

CODE = code_of("device.comm_loss")
OK = {"x": 1}


def run(period: float, pattern: list[bool], params: dict | None = None) -> list[tuple]:
    """pattern[i] True = poll i answered."""
    det = CommLoss(params or {"comm_loss_s": PARAMS["comm_loss_s"]})
    out: list[tuple] = []
    for i, ok in enumerate(pattern):
        det.step(1_000_000 + i * period, OK if ok else None, out)
    return out


def raise_times(out: list[tuple]) -> list[float]:
    return [e[0] - 1_000_000 for e in out if e[1] == CODE and e[2] == RAISE]


def test_water_period_raises_on_fourth_failed_poll() -> None:
    out = run(60, [True] * 5 + [False] * 10 + [True] * 3)
    assert raise_times(out) == [5 * 60 + 180]           # 180 s after the first failure
    assert [e[2] for e in out] == [RAISE, CLEAR]
    assert out[1][3] == (600,)                          # the clear says how long it was silent


def test_water_period_rides_through_three_failed_polls() -> None:
    assert run(60, [True] * 5 + [False] * 3 + [True] * 5) == []


def test_structure_period_one_failed_poll_is_already_an_outage() -> None:
    # polled every 600 s: the silence lasts at least until the next poll
    assert raise_times(run(600, [True, True, False, True])) == [1200]


def test_elevator_period_rides_through_ten_seconds() -> None:
    assert run(1, [True] * 5 + [False] * 10 + [True] * 5) == []
    assert raise_times(run(1, [True] * 5 + [False] * 300)) == [5 + 239]


def test_noise_period() -> None:
    assert run(10, [True] * 3 + [False] * 12 + [True]) == []      # 120 s artifact
    assert raise_times(run(10, [True] * 3 + [False] * 40)) == [30 + 230]


def test_threshold_is_configurable() -> None:
    assert raise_times(run(60, [True] + [False] * 10, {"comm_loss_s": 300})) == [60 + 240]


def test_missing_lines_do_not_count_as_failures() -> None:
    det = CommLoss({"comm_loss_s": 240})
    out: list[tuple] = []
    for t in (0, 60, 120, 400, 460):    # a gap of missing lines, every poll answered
        det.step(t, OK, out)
    assert out == []


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([1, 10, 60, 600]), st.lists(st.booleans(), min_size=1, max_size=400))
def test_raise_and_clear_alternate(period: int, pattern: list[bool]) -> None:
    acts = [e[2] for e in run(period, pattern)]
    assert acts == [RAISE, CLEAR] * (len(acts) // 2) + [RAISE] * (len(acts) % 2)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([1, 10, 60]), st.integers(0, 2000), st.integers(1, 3))
def test_single_null_poll_never_raises(period: int, at: int, n: int) -> None:
    pattern = [True] * 2100
    for k in range(n if period == 60 else 1):
        pattern[at + k] = False
    assert run(period, pattern) == []
