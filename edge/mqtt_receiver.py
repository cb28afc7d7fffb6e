# MQTT packets a board never sends: the gateway's PUBACK of what it received, and a
# broker's CONNACK, SUBACK and PINGRESP for the test brokers; the packet types by name.
# Builds on edge/mqtt.py (the parser, the fixed header) and, like it, does no I/O. Not
# sent to boards.
import struct

from edge import mqtt
from edge.mqtt import get_varint, packet, put_varint

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
    """edge.mqtt.split_publish, with MQTT 5's properties (v5) skipped: (topic, packet
    id, payload start)."""
    topic, pid, k = mqtt.split_publish(buf, first, i, end)
    return topic, pid, skip_props(buf, k, end) if v5 else k


def read_publishes(buf, i, end, v5, topics, make, out):
    """The QoS 1 PUBLISHes at buf[i:end] (bytes) in the shape a broker sends a subscriber
    events in, read in one pass: out.append(make(topic, payload, packet id, 1)) for each.
    Returns the index of the first packet it leaves, one not all there yet or any other
    (another type or QoS, a remaining length from 128 on, MQTT 5 properties, a topic not
    in topics), for parse and split_publish to read; what it reads, they read the same.
    topics: a topic's bytes -> its str, which the caller fills from split_publish's topics
    (so that their UTF-8 is checked there, once per topic)."""
    while end - i > 3:
        first, size = buf[i], buf[i + 1]
        e = i + 2 + size
        # 0x32: PUBLISH, QoS 1 (0xF6 leaves out DUP and RETAIN); at least the topic length
        if first & 0xF6 != 0x32 or size > 0x7F or size < 2 or e > end:
            break
        j = i + 4 + (buf[i + 2] << 8 | buf[i + 3])     # the u16 topic length, the topic
        k = j + 3 if v5 else j + 2                      # the packet id; MQTT 5: a 0, no properties
        if k > e or v5 and buf[j + 2]:
            break
        topic = topics.get(buf[i + 4:j])
        if topic is None:
            break
        out.append(make(topic, buf[k:e], buf[j] << 8 | buf[j + 1], 1))
        i = e
    return i


def props_field(props):
    # MQTT 5: the properties' length as a varint, then the properties; 3.1.1: nothing
    if props is None:
        return b""
    out = bytearray()
    put_varint(out, len(props))
    return out + props


def puback(pid):
    """PUBACK of one packet id (in MQTT 5 the short form means reason 0, success)."""
    return bytes((0x40, 2, pid >> 8, pid & 0xFF))


def pubacks(pids):
    """puback of each packet id, in order, as one bytes: 0x40 0x02 and the u16 id, a u32 each."""
    return struct.pack(">%dI" % len(pids), *[0x40020000 | pid for pid in pids])


def connack(code, session_present, props=None):
    """CONNACK: the session present flag, and the return code (3.1.1) or reason code
    (MQTT 5); 0 accepts the connection."""
    return packet(0x20, bytes((1 if session_present else 0, code)) + props_field(props))


def suback(pid, codes, props=None):
    """SUBACK: one granted QoS, or a failure code (0x80), per filter."""
    return packet(0x90, bytes((pid >> 8, pid & 0xFF)) + props_field(props) + bytes(codes))


def pingresp():
    return b"\xd0\x00"
