"""edge.filters: each filter on hand-made sequences, None handling, chains built from
tables, and a few properties that must hold for any input."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from edge.filters import SKIP, build_chain, REGISTRY


def run(spec, seq, params=None):
    """Feed [(t, v), ...] or [v, ...] (t = 0, 1, 2...) through a chain; list of outputs."""
    chain = build_chain(spec, params)
    items = seq if seq and isinstance(seq[0], tuple) else list(enumerate(seq))
    return [chain.step(t, v) for t, v in items]


def test_range_turns_impossible_values_unknown():
    assert run((("range", 0, 10),), [1.6, 655.35, -1, None, 10]) == [1.6, None, None, None, 10]


def test_filter_out_marks_a_no_data_value():
    assert run((("filter_out", 0),), [3, 0, None, -1]) == [3, None, None, -1]


def test_clamp_limits_and_passes_none():
    assert run((("clamp", 0, 1),), [-0.5, 0.5, 2, None]) == [0, 0.5, 1, None]


def test_rate_limit_rejects_jumps_then_accepts_once_plausible():
    # 1 unit/s: 0 -> 5 one second later is a glitch; 5 s later it is plausible
    out = run((("rate_limit", 1),), [(0, 0.0), (1, 5.0), (2, 1.5), (3, None), (7, 5.0)])
    assert out == [0.0, None, 1.5, None, 5.0]


def test_median_removes_a_single_spike():
    out = run((("median", 3),), [1, 1, 99, 1, None, 2, 2])
    assert out == [1, 1, 1, 1, None, 2, 2]


def test_delayed_on_needs_the_whole_time_and_false_resets():
    spec = (("delayed_on", 3),)
    assert run(spec, [None, 1, 1, 1, 1, 0, 1, 1]) == [None, False, False, False, True, False, False, False]


def test_delayed_on_unknown_neither_interrupts_nor_completes():
    spec = (("delayed_on", 3),)
    # true at 0, unknown at 1..3, true at 4: 4 s of truth with no known false -> on
    assert run(spec, [1, None, None, None, 1]) == [False, False, False, False, True]


def test_delayed_off_holds_on_through_short_false():
    spec = (("delayed_off", 2),)
    assert run(spec, [0, 1, 0, 1, 0, 0, 0, None]) == [False, True, True, True, True, True, False, False]


def test_hysteresis_two_thresholds():
    spec = (("hysteresis", 1.0, 2.0),)
    assert run(spec, [None, 1.5, 2.1, 1.5, 1.1, 0.9, 1.5, None]) == [None, False, True, True, True, False, False, False]


def test_n_of_m_counts_known_samples_only():
    spec = (("n_of_m", 2, 3),)
    assert run(spec, [1, 0, None, 1, 0, 0, 1, 1]) == [False, False, False, True, False, False, False, True]


def test_n_of_m_two_in_a_row_rejects_one_glitch():
    spec = (("n_of_m", 2, 2),)
    assert run(spec, [0, 1, 0, 1, 1, 0]) == [False, False, False, False, True, False]


def test_n_of_m_rejects_bad_arguments():
    with pytest.raises(ValueError):
        build_chain((("n_of_m", 3, 2),))


def test_stuck_value_becomes_unknown_until_it_moves():
    spec = (("stuck", 3, 0.01),)
    out = run(spec, [1.0, 1.0, 1.005, 1.0, 1.0, 2.0, None])
    assert out == [1.0, 1.0, 1.005, None, None, 2.0, None]


def test_timeout_rides_short_dropouts_then_goes_stale():
    spec = (("timeout", 3),)
    assert run(spec, [5, None, None, None, None, 6]) == [5, 5, 5, None, None, 6]


def test_throttle_passes_one_value_per_period():
    spec = (("throttle", 3),)
    assert run(spec, [1, 2, 3, 4, None, 6]) == [1, SKIP, SKIP, 4, SKIP, SKIP]


def test_heartbeat_sends_changes_and_a_beat():
    spec = (("heartbeat", 4, 0.5),)
    out = run(spec, [1.0, 1.2, 2.0, 2.1, 2.2, None, None, 2.0])
    assert out == [1.0, SKIP, 2.0, SKIP, SKIP, None, SKIP, 2.0]


def test_chain_applies_in_order_and_names_parameters():
    spec = (("range", 0, "vmax"), ("median", 3))
    assert run(spec, [1.0, 655.35, 1.2, 1.1], {"vmax": 2.0}) == [1.0, None, 1.1, 1.1]


def test_chain_stops_at_skip():
    chain = build_chain((("throttle", 10), ("range", 0, 1)))
    assert chain.step(0, 0.5) == 0.5
    assert chain.step(1, 5) is SKIP


def test_chain_reset_forgets_state():
    chain = build_chain((("n_of_m", 2, 2),))
    chain.step(0, 1)
    chain.reset()
    assert chain.step(1, 1) is False


def test_build_chain_errors_name_the_culprit():
    with pytest.raises(ValueError, match="nope"):
        build_chain((("nope", 1),))
    with pytest.raises(ValueError, match="vmax"):
        build_chain((("range", 0, "vmax"),), {})


def test_every_registered_filter_passes_none_without_error():
    args = {"range": (0, 1), "filter_out": (0,), "clamp": (0, 1), "rate_limit": (1,), "median": (3,),
            "delayed_on": (1,), "delayed_off": (1,), "hysteresis": (0, 1), "n_of_m": (1, 2),
            "stuck": (5,), "timeout": (5,), "throttle": (1,), "heartbeat": (5,)}
    assert set(args) == set(REGISTRY)
    for name, a in args.items():
        out = run(((name,) + a,), [None, None])
        assert all(v is None or v is SKIP or v is False for v in out), name


bools = st.lists(st.one_of(st.none(), st.booleans()), max_size=60)


@given(bools, st.integers(1, 6), st.integers(0, 4))
def test_n_of_m_is_never_true_with_fewer_than_n_trues(seq, m, extra):
    n = max(1, m - extra)
    out = run((("n_of_m", n, m),), seq) if seq else []
    for i, v in enumerate(out):
        known = [x for x in seq[: i + 1] if x is not None][-m:]
        assert v == (sum(1 for x in known if x) >= n if known else None)


@given(bools, st.integers(0, 5))
def test_delayed_on_is_never_true_before_the_delay(seq, s):
    out = run((("delayed_on", s),), seq) if seq else []
    for i, v in enumerate(out):
        if v:
            # the last known false is more than s seconds before, and there was a true
            known_false = [j for j in range(i + 1) if seq[j] is False]
            first_true = [j for j in range(i + 1) if seq[j] and (not known_false or j > known_false[-1])]
            assert first_true and i - first_true[0] >= s


@given(st.lists(st.one_of(st.none(), st.floats(-1e3, 1e3)), max_size=40), st.integers(1, 7))
def test_median_output_is_one_of_the_recent_values_or_between(seq, n):
    out = run((("median", n),), seq) if seq else []
    for i, v in enumerate(out):
        if seq[i] is None:
            assert v is None
        else:
            recent = [x for x in seq[: i + 1] if x is not None][-n:]
            assert min(recent) <= v <= max(recent)
