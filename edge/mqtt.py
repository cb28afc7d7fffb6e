# MQTT packets, sans I/O: the 7-bit varint (MQTT's remaining length, and the event
# format's fields), the incremental parser, and the packets a publishing client sends.
# Bytes in, bytes out: the agent's link, the gateway and the test brokers do the I/O and
# build and parse every packet here. A client subscribes and receives PUBLISHes too (the
# agent, for the gateway's acknowledgements). The side a board never plays (a broker's
# answers, PUBACK of a received PUBLISH) is in edge/mqtt_receiver.py, so that a board does
# not carry it in RAM. MQTT 3.1.1, and MQTT 5 where the gateway uses it: props is None for
# 3.1.1, else the encoded properties (b"" for none). Golden vectors: tests/vectors/mqtt.json.


def put_varint(out, n):
    """Append n >= 0 to the bytearray out: 7 bits a byte, low group first, the high bit
    set on every byte but the last."""
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)


def get_varint(buf, i, end, most):
    """The varint at buf[i] as (value, index after it); None when buf[:end] ends inside
    it (need more). ValueError when it runs past `most` bytes."""
    n = shift = 0
    stop = i + most
    while i < end:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, i
        if i == stop:
            raise ValueError("varint at byte %d longer than %d bytes" % (stop - most, most))
        shift += 7
    return None


def parse(buf, i, end, limit):
    """The packet at buf[i] as (first byte, body start, index after it), or None while
    buf[:end] does not hold all of it yet. ValueError: a malformed remaining length, or
    one above limit."""
    if end - i < 2:
        return None
    n = buf[i + 1]                      # the remaining length: one byte below 128
    j = i + 2
    if n > 0x7F:
        try:
            got = get_varint(buf, i + 1, end, 4)
        except ValueError:
            raise ValueError("malformed remaining length")
        if got is None:
            return None
        n, j = got
    if n > limit:
        raise ValueError("a packet of %d bytes (limit %d)" % (n, limit))
    if j + n > end:
        return None
    return buf[i], j, j + n


def string(s):
    """An MQTT string or binary field: u16 length, then the bytes (a str as UTF-8)."""
    if isinstance(s, str):
        s = s.encode()
    return bytes((len(s) >> 8, len(s) & 0xFF)) + s


def packet(first, body):
    """The fixed header (the first byte: type and flags; the remaining length), then
    the body: a bytearray. PINGREQ is packet(0xC0, b""), DISCONNECT packet(0xE0, b"")."""
    out = bytearray((first,))
    put_varint(out, len(body))
    return out + body


def connect(client_id, keepalive, clean, user, password, will, props=None):
    """CONNECT. user, password: None to leave out; will: (topic, message, qos, retain)
    or None. MQTT 5 when props is not None."""
    # flags: user 0x80, password 0x40, will retain 0x20, will QoS << 3, will 0x04, clean 0x02
    flags = (0x02 if clean else 0) | (0x80 if user is not None else 0) | (0x40 if password is not None else 0)
    if will:
        flags |= 0x04 | will[2] << 3 | (0x20 if will[3] else 0)
    # protocol name "MQTT", protocol level (4: 3.1.1, 5), flags, keepalive (u16 seconds)
    b = bytearray(b"\x00\x04MQTT")
    b += bytes((4 if props is None else 5, flags, keepalive >> 8, keepalive & 0xFF))
    if props is not None:
        put_varint(b, len(props))
        b += props
    b += string(client_id)
    if will:
        if props is not None:
            b.append(0)                 # no will properties
        b += string(will[0]) + string(will[1])
    if user is not None:
        b += string(user)
    if password is not None:
        b += string(password)
    return packet(0x10, b)


def publish(topic, payload, qos, pid, dup, retain, props=None):
    """PUBLISH at QoS 0 or 1 (pid: its packet id, left out at QoS 0)."""
    # first byte: DUP 0x08, QoS << 1, RETAIN 0x01
    b = string(topic) + (bytes((pid >> 8, pid & 0xFF)) if qos else b"")
    if props is not None:
        b = bytearray(b)
        put_varint(b, len(props))
        b += props
    return packet(0x30 | (8 if dup else 0) | qos << 1 | (1 if retain else 0), b + payload)


def subscribe(pid, filters, qos, props=None):
    """SUBSCRIBE to these topic filters, all at one maximum QoS."""
    b = bytearray((pid >> 8, pid & 0xFF))
    if props is not None:
        put_varint(b, len(props))
        b += props
    for f in filters:
        b += string(f)
        b.append(qos)                   # subscription options: the maximum QoS
    return packet(0x82, b)              # the flags of SUBSCRIBE are fixed: 0b0010


def split_publish(buf, first, i, end):
    """The PUBLISH body buf[i:end] as (topic, packet id, where the rest starts): the
    payload, or in MQTT 5 the properties before it (edge/mqtt_receiver.skip_props). The
    topic is a slice of buf; the packet id 0 at QoS 0. ValueError when the body is too
    short for its header."""
    if end - i < 2:
        raise ValueError("PUBLISH without a topic")
    j = i + 2 + (buf[i] << 8 | buf[i + 1])   # u16 topic length, then the topic
    k = j + 2 if first & 0x06 else j          # QoS 1 or 2: a u16 packet id follows
    if k > end:
        raise ValueError("PUBLISH cut short in its topic or packet id")
    pid = buf[j] << 8 | buf[j + 1] if k > j else 0
    return buf[i + 2:j], pid, k
