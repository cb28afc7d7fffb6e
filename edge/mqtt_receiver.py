# MQTT packets for the receiving end of a PUBLISH, which a board never is: the gateway's
# subscriber and the test brokers. The packet types; splitting a PUBLISH; PUBACK and
# SUBSCRIBE; a broker's CONNACK, SUBACK and PINGRESP. Builds on edge/mqtt.py (the
# varint, the parser, the fixed header) and, like it, does no I/O. Not sent to boards.
from edge.mqtt import get_varint, packet, put_varint, string

# packet types: the high nibble of the first byte
CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK = 1, 2, 3, 4, 8, 9
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14


def skip_props(buf, i, end):
    """The index after the MQTT 5 properties at buf[i] (a varint length, then that many
    bytes). ValueError when they do not fit before end."""
    if i < end and buf[i] < 0x80:       # a length below 128, most often 0: the gateway's hot path
        j = i + 1 + buf[i]
    else:
        got = get_varint(buf, i, end, 4)
        j = end + 1 if got is None else got[0] + got[1]
    if j > end:
        raise ValueError("properties run past the end of the packet")
    return j


def split_publish(buf, first, i, end, v5=False):
    """The PUBLISH body buf[i:end] as (topic, packet id, payload start). The topic is a
    slice of buf; the packet id 0 at QoS 0; v5: MQTT 5, whose properties are skipped.
    ValueError when the body is too short for its header."""
    if end - i < 2:
        raise ValueError("PUBLISH without a topic")
    j = i + 2 + (buf[i] << 8 | buf[i + 1])   # u16 topic length, then the topic
    k = j + 2 if first & 0x06 else j          # QoS 1 or 2: a u16 packet id follows
    if k > end:
        raise ValueError("PUBLISH cut short in its topic or packet id")
    pid = buf[j] << 8 | buf[j + 1] if k > j else 0
    return buf[i + 2:j], pid, skip_props(buf, k, end) if v5 else k


def _props(props):
    # MQTT 5: the properties' length as a varint, then the properties; 3.1.1: nothing
    if props is None:
        return b""
    out = bytearray()
    put_varint(out, len(props))
    return out + props


def puback(pid):
    """PUBACK of one packet id (in MQTT 5 the short form means reason 0, success)."""
    return bytes((0x40, 2, pid >> 8, pid & 0xFF))


def subscribe(pid, filters, qos, props=None):
    """SUBSCRIBE to these topic filters, all at one maximum QoS."""
    b = bytearray((pid >> 8, pid & 0xFF)) + _props(props)
    for f in filters:
        b += string(f)
        b.append(qos)                   # subscription options: the maximum QoS
    return packet(0x82, b)              # the flags of SUBSCRIBE are fixed: 0b0010


def connack(code, session_present, props=None):
    """CONNACK: the session present flag, and the return code (3.1.1) or reason code
    (MQTT 5); 0 accepts the connection."""
    return packet(0x20, bytes((1 if session_present else 0, code)) + _props(props))


def suback(pid, codes, props=None):
    """SUBACK: one granted QoS, or a failure code (0x80), per filter."""
    return packet(0x90, bytes((pid >> 8, pid & 0xFF)) + _props(props) + bytes(codes))


def pingresp():
    return b"\xd0\x00"
