"""gateway/streams.py: the default streams' policy (alarms first, never dropped), the rule
that every event kind travels in exactly one stream, and `--stream NAME:key=value,...`
options with errors that name the stream and field."""
from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.streams import (DEFAULT_STREAMS, DROP_OLDEST, KEEP, KINDS, Stream, StreamError,
                             apply_options, check_streams, rank_of_kind)


def by_name(streams: tuple[Stream, ...]) -> dict[str, Stream]:
    return {s.name: s for s in streams}


def test_defaults_put_alarms_and_reports_first_and_never_drop_them() -> None:
    check_streams(DEFAULT_STREAMS)
    rank = rank_of_kind(DEFAULT_STREAMS)
    assert rank["alarm"] == rank["report"] == 0 < rank["telemetry"]
    alarms, telemetry = DEFAULT_STREAMS
    assert alarms.on_full == KEEP and telemetry.on_full == DROP_OLDEST
    # alarms go at once and are not held by a long backoff after an outage
    assert alarms.batch_age == 0 and alarms.rate == 0 and alarms.retry_max < telemetry.retry_max


def test_every_kind_has_exactly_one_rank() -> None:
    assert sorted(rank_of_kind(DEFAULT_STREAMS)) == sorted(KINDS)


def test_options_change_only_the_named_fields_of_the_named_stream() -> None:
    got = apply_options(DEFAULT_STREAMS, ["telemetry:rate=500,batch_max=1000", "alarms:retry_max=2.5"])
    s = by_name(got)
    assert (s["telemetry"].rate, s["telemetry"].batch_max) == (500.0, 1000)
    assert s["alarms"].retry_max == 2.5
    assert s["telemetry"].batch_age == DEFAULT_STREAMS[1].batch_age
    assert [x.name for x in got] == ["alarms", "telemetry"]          # priority order kept
    assert DEFAULT_STREAMS[1].rate == 2000.0                         # the table is not changed


def test_a_later_option_wins_over_an_earlier_one() -> None:
    got = apply_options(DEFAULT_STREAMS, ["telemetry:rate=500", "telemetry:rate=100"])
    assert by_name(got)["telemetry"].rate == 100.0


def test_kinds_can_move_between_streams_when_all_stay_covered() -> None:
    got = apply_options(DEFAULT_STREAMS, ["alarms:kinds=alarm", "telemetry:kinds=report+telemetry"])
    assert rank_of_kind(got) == {"alarm": 0, "report": 1, "telemetry": 1}


def test_no_options_give_the_defaults() -> None:
    assert apply_options(DEFAULT_STREAMS, []) == DEFAULT_STREAMS


@pytest.mark.parametrize("option,message", [
    ("video:rate=1", r"unknown stream 'video'; streams: alarms, telemetry"),
    ("telemetry", "expected NAME:key=value"),
    ("telemetry:", "expected NAME:key=value"),
    ("telemetry:rate", r"'rate' has no '=value'"),
    ("telemetry:speed=3", r"unknown key 'speed'; keys: batch_max"),
    ("telemetry:rate=fast", r"rate='fast' is not a number"),
    ("telemetry:batch_max=1.5", r"batch_max='1.5' is not a number"),
    ("telemetry:batch_max=0", r"stream 'telemetry': batch_max must be 1 to 5000"),
    ("telemetry:batch_max=5001", "batch_max must be 1 to 5000"),
    ("alarms:rate=-1", r"stream 'alarms': batch_age and rate must be >= 0"),
    ("alarms:retry_max=0", "retry_max > 0"),
    ("telemetry:on_full=drop_newest", r"on_full must be one of keep, drop_oldest"),
    ("telemetry:kinds=telemetry+video", r"kinds must be some of alarm, report, telemetry, got telemetry, video"),
    ("alarms:kinds=alarm", r"no stream takes kind report"),
    ("alarms:kinds=alarm+report+telemetry", r"kind 'telemetry' is in both stream"),
])
def test_a_bad_option_is_refused_naming_what_is_wrong(option: str, message: str) -> None:
    with pytest.raises(StreamError, match=message):
        apply_options(DEFAULT_STREAMS, [option])


def test_a_stream_set_must_cover_every_kind_once_with_unique_names() -> None:
    alarms, telemetry = DEFAULT_STREAMS
    with pytest.raises(StreamError, match="no stream takes kind telemetry"):
        check_streams([alarms])
    with pytest.raises(StreamError, match="stream 'alarms' is defined twice"):
        check_streams([alarms, telemetry, replace(alarms, kinds=frozenset({"telemetry"}))])
    with pytest.raises(StreamError, match="kinds must be some of"):
        check_streams([alarms, telemetry, Stream("spare", frozenset())])
    with pytest.raises(StreamError, match="the name must be a word"):
        check_streams([replace(alarms, name="high-prio"), telemetry])

