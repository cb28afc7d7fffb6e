"""edge.modbus: STANDARDS.md §0/§7 vectors, every exception code, broken frames, and
round trips checked against pymodbus' own RTU framer as an independent implementation."""
from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings, strategies as st
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import (ReadHoldingRegistersRequest, ReadInputRegistersRequest,
                                           WriteMultipleRegistersRequest, WriteSingleRegisterRequest)

from edge import codes, modbus, modbus_write
from edge.modbus import CrcError, FrameError, ModbusError, ModbusException, ModbusTimeout
from tools.testbench.slave import exception_response, read_response, write_response
from tools.common import runtime

slaves = st.integers(1, 247)
u16 = st.integers(0, 0xFFFF)
register_lists = st.lists(u16, min_size=1, max_size=modbus.MAX_READ)


def test_crc_check_value():
    assert modbus.crc16(b"123456789") == 0x4B37


def test_seal_appends_crc_low_byte_first():
    assert modbus.seal(bytes.fromhex("010300000002")) == bytes.fromhex("010300000002C40B")


def test_crc_can_continue_a_run():
    assert modbus.crc16(b"6789", modbus.crc16(b"12345")) == 0x4B37


@pytest.mark.parametrize("args, frame", [
    ((1, 3, 0x0000, 2), "01 03 00 00 00 02 C4 0B"),      # §0, CRC low byte first
    ((1, 3, 0x2600, 4), "01 03 26 00 00 04 4F 41"),      # PHG-2091 pH meter, §6.2
])
def test_read_request_vectors(args, frame):
    assert modbus.read_request(*args) == bytes.fromhex(frame)


def _pymodbus_frame(pdu) -> bytes:
    return FramerRTU(DecodePDU(False)).buildFrame(pdu)


@given(slaves, st.sampled_from([3, 4]), st.integers(0, 0xFFFF - modbus.MAX_READ), st.integers(1, modbus.MAX_READ))
def test_read_request_matches_pymodbus(slave, fc, addr, count):
    cls = ReadHoldingRegistersRequest if fc == 3 else ReadInputRegistersRequest
    assert modbus.read_request(slave, fc, addr, count) == _pymodbus_frame(cls(address=addr, count=count, dev_id=slave))


@given(slaves, u16, u16)
def test_write_single_matches_pymodbus(slave, addr, value):
    pdu = WriteSingleRegisterRequest(address=addr, registers=[value], dev_id=slave)
    assert modbus_write.write_single_request(slave, addr, value) == _pymodbus_frame(pdu)


@given(slaves, st.integers(0, 0xFFFF - modbus_write.MAX_WRITE),
       st.lists(u16, min_size=1, max_size=modbus_write.MAX_WRITE))
def test_write_multiple_matches_pymodbus(slave, addr, values):
    pdu = WriteMultipleRegistersRequest(address=addr, registers=values, dev_id=slave)
    assert modbus_write.write_multiple_request(slave, addr, values) == _pymodbus_frame(pdu)


@pytest.mark.parametrize("call", [
    lambda: modbus.read_request(1, 3, 0, 0),
    lambda: modbus.read_request(1, 3, 0, 126),
    lambda: modbus.read_request(1, 5, 0, 1),
    lambda: modbus.read_request(0, 3, 0, 1),             # nobody answers a broadcast read
    lambda: modbus.read_request(248, 3, 0, 1),           # 248..255 reserved
    lambda: modbus.read_request(1, 3, 0xFFFF, 2),        # past the last address
    lambda: modbus_write.write_multiple_request(1, 0, [0] * 124),
    lambda: modbus_write.write_multiple_request(1, 0, []),
    lambda: modbus_write.write_single_request(1, 0, 0x10000),
])
def test_builders_refuse_what_the_spec_forbids(call):
    with pytest.raises(ValueError):
        call()


def test_expected_length():
    assert modbus.expected_length(modbus.read_request(1, 3, 0, 8)) == 5 + 16
    assert modbus.expected_length(4, 125) == 255
    assert modbus.expected_length(modbus_write.write_single_request(1, 0, 1)) == 8
    assert modbus.expected_length(modbus_write.write_multiple_request(1, 0, [1, 2, 3])) == 8
    assert modbus.expected_length(modbus_write.write_single_request(0, 0, 1)) == 0   # broadcast: no reply


@pytest.mark.parametrize("baud, ms", [(2400, 16.04), (4800, 8.021), (9600, 4.010), (19200, 2.005),
                                      (38400, 1.75), (115200, 1.75)])
def test_silence_matches_section_7(baud, ms):
    assert modbus.silence_s(baud) * 1000 == pytest.approx(ms, rel=1e-3)


def test_error_classes_and_kinds_match_comm_fault_event():
    # edge/codes.py: device.comm_fault kind 1 timeout, 2 bad CRC, 3 exception, 4 malformed frame
    assert "comm_fault" in codes.CODES[0x11][0]
    assert [(c.kind, issubclass(c, ModbusError)) for c in (ModbusTimeout, CrcError, ModbusException, FrameError)] \
        == [(1, True), (2, True), (3, True), (4, True)]
    assert modbus.KINDS == {1: "timeout", 2: "crc", 3: "exception", 4: "frame"}
    assert len({ModbusTimeout, CrcError, ModbusException, FrameError}) == 4


@pytest.mark.parametrize("code", range(1, 12))
def test_every_exception_code(code):
    req = modbus.read_request(7, 4, 10, 2)
    reply = exception_response(7, 4, code)
    assert reply[:3] == bytes((7, 0x84, code))
    with pytest.raises(ModbusException) as info:
        modbus.parse_response(req, reply)
    e = info.value
    assert (e.code, e.function, e.kind) == (code, 4, 3)
    assert e.name == modbus.exception_name(code)
    assert str(code) in str(e)


def test_exception_names_follow_the_spec():
    assert modbus.exception_name(2) == "illegal data address"
    assert modbus.exception_name(4) == "server device failure"
    assert modbus.exception_name(11) == "gateway target failed to respond"
    assert [modbus.exception_name(c) for c in (0, 9, 12, 255)] == ["unknown"] * 4


@given(slaves, st.sampled_from([3, 4]), u16, register_lists)
def test_read_round_trip(slave, fc, addr, values):
    addr = min(addr, 0x10000 - len(values))
    req = modbus.read_request(slave, fc, addr, len(values))
    reply = read_response(slave, fc, values)
    assert len(reply) == modbus.expected_length(req)
    assert modbus.parse_response(req, reply) == values


@given(slaves, u16, u16, st.lists(u16, min_size=1, max_size=modbus_write.MAX_WRITE))
def test_write_round_trip(slave, addr, value, values):
    req = modbus_write.write_single_request(slave, addr, value)
    assert modbus.parse_response(req, write_response(req)) == (addr, value)
    addr = min(addr, 0x10000 - len(values))
    req = modbus_write.write_multiple_request(slave, addr, values)
    assert modbus.parse_response(req, write_response(req)) == (addr, len(values))


@settings(max_examples=300)
@given(slaves, register_lists, st.data())
def test_any_single_byte_corruption_is_detected(slave, values, data):
    req = modbus.read_request(slave, 3, 0, len(values))
    reply = bytearray(read_response(slave, 3, values))
    i = data.draw(st.integers(0, len(reply) - 1))
    reply[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(CrcError):
        modbus.parse_response(req, bytes(reply))


@pytest.mark.parametrize("i", range(5))
@pytest.mark.parametrize("flip", [0x01, 0x80, 0xFF])
def test_corrupted_exception_reply_is_never_taken_for_an_answer(i, flip):
    req = modbus.read_request(1, 3, 0, 2)
    reply = bytearray(exception_response(1, 3, 2))
    reply[i] ^= flip
    with pytest.raises((CrcError, FrameError)):
        modbus.parse_response(req, bytes(reply))


def test_truncated_frames():
    req = modbus.read_request(1, 3, 0, 8)
    reply = read_response(1, 3, list(range(8)))
    with pytest.raises(ModbusTimeout):
        modbus.parse_response(req, b"")
    for n in range(1, len(reply)):
        with pytest.raises(FrameError, match="short"):
            modbus.parse_response(req, reply[:n])


@pytest.mark.parametrize("reply, match", [
    (modbus.seal(bytes((2, 3, 4, 0, 1, 0, 2))), "slave 2"),          # another slave answered
    (modbus.seal(bytes((1, 4, 4, 0, 1, 0, 2))), "function 4"),       # wrong function
    (modbus.seal(bytes((1, 3, 6, 0, 1, 0, 2))), "byte count"),       # byte count lies
    (modbus.seal(bytes((1, 3, 4, 0, 1, 0, 2, 0, 3))), "expected"),   # too long
    (modbus.seal(bytes((1, 0x83, 2, 0))), "short frame: 6"),         # padded exception
])
def test_well_sealed_but_wrong_frames(reply, match):
    with pytest.raises(FrameError, match=match):
        modbus.parse_response(modbus.read_request(1, 3, 0, 2), reply)


def test_write_echo_must_match():
    req = modbus_write.write_single_request(1, 5, 99)
    with pytest.raises(FrameError, match="echo"):
        modbus.parse_response(req, write_response(modbus_write.write_single_request(1, 5, 98)))


@settings(max_examples=300)
@given(st.binary(max_size=40), st.sampled_from([1, 8, 17]))
def test_garbage_never_passes_or_crashes(garbage, count):
    req = modbus.read_request(1, 3, 0, count)
    try:
        values = modbus.parse_response(req, garbage)
    except ModbusError:
        return
    # only a frame that is valid in every respect may pass
    assert garbage == read_response(1, 3, values)


MP_VECTORS = """
from edge import modbus
from tools.testbench import slave
assert modbus.crc16(b"123456789") == 0x4B37
assert modbus.read_request(1, 3, 0x2600, 4) == bytes.fromhex("0103260000044f41")
try:
    modbus.parse_response(modbus.read_request(1, 3, 0, 2), slave.exception_response(1, 3, 11))
except modbus.ModbusException as e:
    print(e.kind, e.code, e.name)
print(modbus.parse_response(modbus.read_request(1, 3, 0, 2), slave.read_response(1, 3, [1, 65535])))
"""


def test_same_results_on_micropython():
    out = subprocess.run([runtime.micropython(), "-c", MP_VECTORS], env=runtime.micropython_env(),
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr + out.stdout
    assert out.stdout.split("\n")[:2] == ["3 11 gateway target failed to respond", "[1, 65535]"]
