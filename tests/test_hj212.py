"""gateway/hj212.py: the vectors of STANDARDS §0 (carried into docs/hj212.md), build ->
parse round trips per command, and the lenient parsing the field needs."""
from __future__ import annotations

import pytest

from edge.modbus import crc16
from gateway import hj212
from gateway.hj212_uplink import Flags, Packer, Hj212Config, period_items

STD = b"QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&"
# (data segment, its CRC) of docs/hj212.md's vector table
VECTORS = [
    (STD, "1C80"),
    (b"QN=20160801085857223;ST=91;CN=9014;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&&&", "3240"),
    (b"QN=20160801085857223;ST=23;CN=2011;PW=123456;MN=010000A8900016F000169DC0;Flag=5;"
     b"CP=&&DataTime=20160801085857;LA-Rtd=50.1&&", "0880"),
    (b"QN=20160801085857223;ST=21;CN=2011;PW=123456;MN=010000A8900016F000169DC0;Flag=5;"
     b"CP=&&DataTime=20160801085857;w01001-Rtd=7.12,w01001-Flag=N;w01009-Rtd=6.5,w01009-Flag=N;"
     b"w21003-Rtd=0.42,w21003-Flag=N;w21011-Rtd=0.08,w21011-Flag=N&&", "0CC0"),
]


def packet(data: bytes, check: str) -> bytes:
    return b"##%04d%s%s\r\n" % (len(data), data, check.encode())


@pytest.mark.parametrize("data,check", VECTORS)
def test_the_vectors_are_accepted_and_built_byte_for_byte(data: bytes, check: str) -> None:
    assert "%04X" % hj212.crc(data) == check
    p, used = hj212.parse(packet(data, check))
    assert isinstance(p, hj212.Packet) and used == len(packet(data, check))
    assert hj212.build(p) == packet(data, check)


def test_the_standards_example_is_101_characters_and_1c80_not_the_modbus_0759() -> None:
    assert len(STD) == 101 and "%04X" % crc16(STD) == "0759"
    assert packet(STD, "1C80").startswith(b"##0101")
    ev, used = hj212.parse(packet(STD, "0759"))
    assert isinstance(ev, hj212.Refused) and ev.reason == "crc" and used == len(packet(STD, "0759")) - 2


@pytest.mark.parametrize("cn", [hj212.CN_REALTIME, hj212.CN_MINUTE, hj212.CN_HOUR])
def test_uploads_round_trip(cn: str) -> None:
    p = hj212.data_packet(cn, hj212.ST_SURFACE_WATER, "wq-001", "123456", "2017", "20260101080000123",
                          "20260101080000", [("w01001-Avg", "7.12"), ("w01001-Flag", "C")])
    raw = hj212.build(p)
    back, used = hj212.parse(raw)
    assert back == p and used == len(raw) and back.wants_ack and back.flag == 5
    assert b"w01001-Avg=7.12,w01001-Flag=C" in raw


def test_replies_and_the_timeout_command_round_trip() -> None:
    up = hj212.data_packet("2011", "21", "MN1", "123456", "2017", "20260101080000123", "20260101080000", [])
    ack, _ = hj212.parse(hj212.build(hj212.data_ack(up)))
    assert ack.cn == "9014" and ack.qn == up.qn and not ack.wants_ack and ack.flag == 4
    cmd, _ = hj212.parse(hj212.build(hj212.set_timeout("20260101080000999", "123456", "MN1", 5, 2)))
    assert hj212.timeouts_of(cmd) == (5, 2)
    assert hj212.parse(hj212.build(hj212.reply(cmd, "9012", "ExeRtn", "1")))[0].cp == {"ExeRtn": "1"}


def test_version_2025_is_a_setting_of_the_flag() -> None:
    assert hj212.flag_for("2017", False) == 4 and hj212.flag_for("2025", False) == 8
    assert hj212.flag_for("2025", True) == 9


def test_lenient_parsing() -> None:
    # lower-case CRC, no CR LF, junk before, Flag missing, short MN, milliseconds in DataTime
    data = b"ST=21;QN=20210301111100112;CN=2011;MN=ABC;CP=&&DataTime=20210301111100112;w01001-Rtd=7.1&&"
    raw = b"xx" + b"##%04d%s%04x" % (len(data), data, hj212.crc(data))
    events, rest = hj212.parse_all(raw + packet(STD, "1C80"))
    assert [type(e) for e in events] == [hj212.Packet, hj212.Packet] and rest == b""
    p = events[0]
    assert p.mn == "ABC" and p.flag is None and not p.wants_ack and p.cp["w01001-Rtd"] == "7.1"
    # unknown flag bits are tolerated
    eight = STD.replace(b"Flag=5", b"Flag=8")
    assert hj212.parse(packet(eight, "%04X" % hj212.crc(eight)))[0].flag == 8


def test_bad_packets_are_refused_with_a_reason_and_the_stream_goes_on() -> None:
    good = packet(STD, "1C80")
    bad_len = b"##01x1" + STD + b"1C80\r\n"
    no_cn = b"QN=1;CP=&&&&"
    no_cn = packet(no_cn, "%04X" % hj212.crc(no_cn))
    wrong_len = b"##0100" + STD + b"1C80\r\n"
    events, rest = hj212.parse_all(bad_len + good + no_cn + wrong_len + good)
    reasons = [e.reason if isinstance(e, hj212.Refused) else "ok" for e in events]
    assert reasons[-1] == "ok" and reasons.count("ok") == 2 and "fields" in reasons and rest == b""
    assert {"length", "crc"} & set(reasons)
    # need more data: nothing used past junk
    assert hj212.parse(good[:50]) == (None, 0)


def test_strict_build_refuses_what_the_standard_does_not_allow() -> None:
    base = dict(qn="20260101080000123", st="21", cn="2011", pw="123456", mn="MN1", flag=5)
    for field, value in (("qn", "2026"), ("cn", "20110"), ("pw", "1234567"), ("mn", "X" * 25)):
        with pytest.raises(hj212.Hj212Error):
            hj212.build(hj212.Packet(**{**base, field: value}))
    with pytest.raises(hj212.Hj212Error):
        hj212.build(hj212.Packet(**base, cp={"w01001-Rtd": "7;1"}))
    with pytest.raises(hj212.Hj212Error):
        hj212.build(hj212.Packet(**base, cp={"x%d-Rtd" % i: "1.0" for i in range(200)}))


def test_flags_come_from_what_the_device_reported() -> None:
    f = Flags()
    f.note("device.sensor_health", 1000, {"kind": 3, "field": 0, "duration_s": 300})   # pH calibration
    f.note("device.comm_fault", 5000, {"kind": 1, "detail": 0, "count": 1})
    assert f.flag(800, 0, 7.0) == "C" and f.flag(800, 1, 7.0) == "N"     # only pH, only in the episode
    assert f.flag(650, 0, 7.0) == "N"
    assert f.flag(5030, 1, 7.0) == "B" and f.flag(9000, 1, None) == "B"
    f.note("device.sensor_health", 9000, {"kind": 2, "field": 255, "duration_s": 1800})
    assert f.flag(8000, 3, 0.1) == "D"


def test_periods_close_into_minute_and_hour_packets_with_the_worst_flag() -> None:
    packer = Packer(Hj212Config("127.0.0.1:1", minutes=10, utc_offset_h=0))
    t0 = 1_700_000_400                  # a 10-minute boundary
    values = {"ph": 7.0, "do": 6.0, "nh3n": 0.5, "tp": 0.1, "temp": 12.0, "turb": 3.0}
    out = []
    for i in range(10):
        out += packer.row(i + 1, "wq", 1, i, "telemetry.water_quality", t0 + 60 * i, True,
                          dict(values, ph=7.0 + i / 10, do=None if i == 3 else 6.0), t0 + 60 * i)
    assert [hj212.parse(o[2])[0].cn for o in out] == ["2011"] * 10
    closing = packer.row(11, "wq", 1, 10, "telemetry.water_quality", t0 + 600, True, values, t0 + 600)
    minute = hj212.parse(closing[0][2])[0]
    assert minute.cn == "2051" and minute.cp["DataTime"] == "20231114222000"
    assert (minute.cp["w01001-Min"], minute.cp["w01001-Avg"], minute.cp["w01001-Max"]) == ("7.00", "7.45", "7.90")
    assert minute.cp["w01001-Flag"] == "N" and minute.cp["w01009-Flag"] == "B"
    assert period_items("telemetry.noise", [({"laeq": 60.0}, {"laeq": "N"}), ({"laeq": 70.0}, {"laeq": "M"})]) == [
        ("Leq-Data", "67.4"), ("LMx-Data", "70.0"), ("LMn-Data", "60.0"), ("Leq-Flag", "M")]
