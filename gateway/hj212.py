# HJ 212-2017 packets, sans-I/O: build them strictly, parse them leniently, no socket in
# sight. The gateway's HJ 212 uplink (gateway/hj212_uplink.py), the reference platform's
# HJ 212 receiver (gateway/hj212_platform.py), the tests and the fuzz run share it.
# The facts and their sources: docs/hj212.md.
#
#   ##dddd<data segment>CCCC\r\n        dddd: the segment's length, CCCC: its CRC (hex)
#   data segment: QN=...;ST=..;CN=....;PW=......;MN=...;Flag=.;CP=&&<items>&&
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Iterable, Union

# Table 9 command codes (the ones we send or answer)
CN_SET_TIMEOUT = "1000"          # host -> site: OverTime, ReCount
CN_REALTIME = "2011"
CN_MINUTE = "2051"
CN_HOUR = "2061"
CN_QN_REPLY = "9011"             # QnRtn
CN_EXE_REPLY = "9012"            # ExeRtn
CN_DATA_ACK = "9014"             # the data reply: same QN as the upload it acknowledges
DATA_CNS = (CN_REALTIME, "2021", "2031", "2041", CN_MINUTE, CN_HOUR, "2081")
# Table 5 system codes
ST_SURFACE_WATER = "21"
ST_NOISE = "23"                  # acoustic-environment quality
ST_INTERACTION = "91"            # replies 9011-9014
# Flag bits V5..V0 D A: the version sits above D (bit 1) and A (bit 0)
FLAG_ACK = 0x01                  # A: the sender wants a 9014
FLAG_SPLIT = 0x02                # D: PNUM/PNO present
VERSIONS = {"2017": 1, "2025": 2}   # Flag=4 / Flag=8 for a plain packet
# Table 6 / Table 7
EXE_OK = "1"
QN_READY = "1"
QN_REFUSED = "2"
QN_BAD_PW = "3"
# Table 1 defaults for GPRS/CDMA/LTE links: 10 s, 3 retries (ADSL: 5 s, 3)
OVERTIME_S = 10
RECOUNT = 3
MAX_DATA = 1024                  # Table 2: 0 <= data segment <= 1024 characters
HEADER = b"##"
TAIL = b"\r\n"
# the data-segment fields in the standard's order; CP always last
ORDER = ("QN", "ST", "CN", "PW", "MN", "Flag", "PNUM", "PNO")
# characters that would cut a value out of its place in the segment
_SEPARATORS = re.compile(r"[;,=&\r\n]")


class Hj212Error(ValueError):
    """A packet that cannot be built as the standard requires; the message names the field."""


def crc(data: bytes) -> int:
    """Appendix A: init 0xFFFF; per byte reg = (reg >> 8) ^ byte, then 8 shifts with
    0xA001. Not CRC-16/MODBUS, which XORs the byte into the low half (0759 vs 1C80 for
    the standard's example)."""
    reg = 0xFFFF
    for b in data:
        reg = (reg >> 8) ^ b
        for _ in range(8):
            lsb = reg & 1
            reg >>= 1
            if lsb:
                reg ^= 0xA001
    return reg


@dataclass
class Packet:
    """One packet's data segment. cp keeps its order: building groups consecutive
    items of one factor (w01001-Rtd, w01001-Flag) with ',' and the rest with ';', as
    the standard's examples do."""
    qn: str | None
    st: str | None
    cn: str | None
    pw: str | None
    mn: str | None
    flag: int | None
    cp: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)   # PNUM, PNO, unknown fields (parse)

    @property
    def wants_ack(self) -> bool:
        return self.flag is not None and bool(self.flag & FLAG_ACK)


@dataclass(frozen=True)
class Refused:
    """Bytes the parser would not take: reason is one of REFUSALS, raw what it skipped."""
    reason: str
    raw: bytes


REFUSALS = ("length", "crc", "fields")
Event = Union[Packet, Refused]


def flag_for(version: str, ack: bool) -> int:
    return VERSIONS[version] << 2 | (FLAG_ACK if ack else 0)


def qn_at(t: float, utc_offset_h: float) -> str:
    """QN: YYYYMMDDhhmmsszzz, the time the request was made, to the millisecond."""
    ms = int(round(t * 1000))
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(ms // 1000 + utc_offset_h * 3600)) + "%03d" % (ms % 1000)


def data_time(t: float, utc_offset_h: float) -> str:
    """DataTime / SystemTime: YYYYMMDDhhmmss (site local time: Beijing time in China)."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(int(t) + utc_offset_h * 3600))


def _cp_text(cp: dict[str, str]) -> str:
    out: list[str] = []
    prev = None
    for k, v in cp.items():
        factor = k.split("-", 1)[0] if "-" in k else None
        if out:
            out.append("," if factor is not None and factor == prev else ";")
        out.append("%s=%s" % (k, v))
        prev = factor
    return "".join(out)


def _check(name: str, value: str, pattern: str) -> None:
    if not re.fullmatch(pattern, value):
        raise Hj212Error("%s=%r: not %s" % (name, value, pattern))


def segment(p: Packet) -> str:
    """The data segment, checked field by field (Table 3). Raises Hj212Error."""
    if p.qn is None or p.st is None or p.cn is None or p.pw is None or p.mn is None or p.flag is None:
        raise Hj212Error("QN, ST, CN, PW, MN and Flag are all required")
    _check("QN", p.qn, r"\d{17}")
    _check("ST", p.st, r"[0-9A-Z]{2}")
    _check("CN", p.cn, r"\d{4}")
    _check("PW", p.pw, r"[!-~]{1,6}")
    _check("MN", p.mn, r"[!-~]{1,24}")
    if not 0 <= p.flag <= 255:
        raise Hj212Error("Flag=%d: not 0..255" % p.flag)
    for k, v in list(p.cp.items()) + list(p.extra.items()):
        if _SEPARATORS.search(k) or _SEPARATORS.search(v) or not (k + v).isascii():
            raise Hj212Error("CP %s=%r: separators or non-ASCII inside" % (k, v))
    fields = {"QN": p.qn, "ST": p.st, "CN": p.cn, "PW": p.pw, "MN": p.mn, "Flag": str(p.flag), **p.extra}
    head = ";".join("%s=%s" % (k, fields[k]) for k in ORDER if k in fields)
    text = "%s;CP=&&%s&&" % (head, _cp_text(p.cp))
    if len(text) > MAX_DATA:
        raise Hj212Error("data segment of %d characters: the standard allows %d" % (len(text), MAX_DATA))
    return text


def build(p: Packet) -> bytes:
    """The whole packet, ASCII only (so characters and bytes count alike)."""
    data = segment(p).encode("ascii")
    return b"##%04d%s%04X\r\n" % (len(data), data, crc(data))


def parse_segment(data: str) -> Packet | None:
    """The fields of a data segment, leniently: any order, unknown fields kept, Flag or
    others missing (None), CP's closing && missing. None: no CN, or no CP=&& at all."""
    head, sep, cp_text = data.partition("CP=&&")
    if not sep:
        return None
    fields: dict[str, str] = {}
    for item in head.split(";"):
        k, eq, v = item.partition("=")
        if eq:
            fields[k.strip()] = v.strip()
    if cp_text.endswith("&&"):
        cp_text = cp_text[:-2]
    cp: dict[str, str] = {}
    for item in re.split(r"[;,]", cp_text):
        k, eq, v = item.partition("=")
        if eq:
            cp[k.strip()] = v.strip()
    flag = fields.pop("Flag", None)
    p = Packet(fields.pop("QN", None), fields.pop("ST", None), fields.pop("CN", None), fields.pop("PW", None),
               fields.pop("MN", None), int(flag) if flag is not None and flag.isdigit() and int(flag) < 256 else None,
               cp, fields)
    return p if p.cn else None


def parse(buf: bytes) -> tuple[Event | None, int]:
    """The next packet in buf: (Packet or Refused, bytes used), or (None, bytes used)
    when more data is needed (used > 0 only to skip junk before a '##').

    Lenient where the field is (docs/hj212.md): lower-case CRC hex, a missing CR LF,
    fields in any order or missing (Flag), short MN. Strict where the bytes would
    otherwise be trusted: the length must be 4 digits and the CRC must match."""
    start = buf.find(HEADER)
    if start < 0:
        # keep a last '#' that may begin the next header
        return None, len(buf) - 1 if buf.endswith(b"#") else len(buf)
    if len(buf) < start + 6:
        return None, start
    digits = buf[start + 2:start + 6]
    if not digits.isdigit():
        return Refused("length", buf[start:start + 6]), start + 2
    n = int(digits)
    end = start + 6 + n
    if len(buf) < end + 4:
        return None, start
    data, check = buf[start + 6:end], buf[end:end + 4]
    is_hex = all(c in b"0123456789abcdefABCDEF" for c in check)   # int() alone takes "0x1c"
    if not is_hex or int(check, 16) != crc(data):
        # a wrong length lands the CRC on other bytes: skip to the next header
        nxt = buf.find(HEADER, start + 2)
        used = nxt if nxt >= 0 and nxt < end + 4 else end + 4
        return Refused("crc" if is_hex else "length", buf[start:used]), used
    used = end + 4
    if buf[used:used + 2] == TAIL:
        used += 2
    try:
        p = parse_segment(data.decode("utf-8"))
    except UnicodeDecodeError:
        p = None
    if p is None:
        return Refused("fields", buf[start:used]), used
    return p, used


def parse_all(buf: bytes) -> tuple[list[Event], bytes]:
    """Every whole packet in buf, and the bytes left over for the next read."""
    events: list[Event] = []
    while True:
        ev, used = parse(buf)
        buf = buf[used:]
        if ev is None:
            return events, buf
        events.append(ev)


# ---- what the gateway sends and answers -----------------------------------------------

def data_ack(request: Packet, version: str = "2017") -> Packet:
    """The 9014 that answers an upload: the upload's QN, PW and MN, no CP items."""
    return Packet(request.qn, ST_INTERACTION, CN_DATA_ACK, request.pw, request.mn, flag_for(version, False))


def reply(request: Packet, cn: str, item: str, code: str, version: str = "2017") -> Packet:
    """A 9011 (QnRtn) or 9012 (ExeRtn) to a host's command, with the command's QN."""
    return Packet(request.qn, ST_INTERACTION, cn, request.pw, request.mn, flag_for(version, False), {item: code})


def set_timeout(qn: str, pw: str, mn: str, overtime: int, recount: int, version: str = "2017") -> Packet:
    """CN=1000: the host sets the site's reply timeout (1..99 s) and retries."""
    return Packet(qn, ST_INTERACTION, CN_SET_TIMEOUT, pw, mn, flag_for(version, True),
                  {"OverTime": str(overtime), "ReCount": str(recount)})


def timeouts_of(p: Packet) -> tuple[int, int] | None:
    """(OverTime, ReCount) of a CN=1000, or None if either is missing or out of range."""
    try:
        overtime, recount = int(p.cp["OverTime"]), int(p.cp["ReCount"])
    except (KeyError, ValueError):
        return None
    return (overtime, recount) if 0 < overtime <= 99 and 0 <= recount <= 99 else None


def number(value: float, decimals: int) -> str:
    return "%.*f" % (decimals, value)


def data_packet(cn: str, st: str, mn: str, pw: str, version: str, qn: str, when: str,
                items: Iterable[tuple[str, str]]) -> Packet:
    """An upload (2011, 2051, 2061) asking for a 9014: DataTime, then the factors' items."""
    cp = {"DataTime": when}
    cp.update(items)
    return Packet(qn, st, cn, pw, mn, flag_for(version, True), cp)
