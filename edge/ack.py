# The gateway's end-to-end acknowledgement: which of a device's events it has committed
# to its store, sent back on dev/<id>/cmd/ack so the device can forget them (a broker's
# PUBACK only says the broker has the event, and a broker crash can still lose it).
# Sans-I/O; the gateway encodes, the agent decodes. Spec: docs/delivery.md.
#
#   u8 0xA2 | (uvarint boot | uvarint first seq | uvarint count)* | 8-byte MAC
#
# The MAC is the device's own HMAC (edge/event.py's Signer, bound to the device id) over
# b"ack" and every byte before it: only the gateway, which holds the device's secret, can
# make the device drop an event, whoever else can publish on the topic. The gateway signs
# it with the key the events were signed with (the previous one during a key rotation).
from edge.mqtt import get_varint, put_varint

VERSION = 0xA2      # 0xA1: signed without the device id (event format v1)
MAC_LEN = 8
MAX_RANGES = 64     # what one ack may carry; a batch with more sends several


def topic(device_id):
    return "dev/%s/cmd/ack" % device_id


def encode(signer, ranges):
    """ranges: (boot, first seq, count) triples."""
    out = bytearray((VERSION,))
    for boot, first, n in ranges:
        put_varint(out, boot)
        put_varint(out, first)
        put_varint(out, n)
    out.extend(signer.mac(b"ack" + out))
    return bytes(out)


def decode(signer, payload):
    """The (boot, first seq, count) triples of an ack, or None when it is not one this
    device's gateway made (wrong version, MAC, or shape)."""
    end = len(payload) - MAC_LEN
    if end < 1 or payload[0] != VERSION or not signer.check(b"ack" + payload[:end], payload[end:]):
        return None
    ranges = []
    i = 1
    try:
        while i < end and len(ranges) < MAX_RANGES:
            boot, i = get_varint(payload, i, end, 5)
            first, i = get_varint(payload, i, end, 5)
            n, i = get_varint(payload, i, end, 5)
            ranges.append((boot, first, n))
    except (TypeError, ValueError):   # a varint cut short (None) or too long
        return None
    return ranges if i == end else None
