# The device id rule: one home for the agent's config check (edge/config.py), the
# gateway's registry and the platform receiver. Boot-time only on a board: edge.boot
# unloads it with edge.config, so it costs the running agent nothing.
#
# An id is many things at once: the device's broker user and MQTT client id, a topic
# level (dev/<id>/ev: no '+', '#', '/' or NUL), a line in mosquitto's password file
# (user:hash, no ':') and ACL file (user <id>, no whitespace), a part of every event id
# (<id>:<boot>:<seq>), and a file name on the provisioning side (not '.' or '..', no '/',
# no leading '.' or '-'). Rather than list what each of those forbids, allow only what
# all of them take. No `re`: on a board it costs heap, and a loop over the characters
# can also say which one is wrong.

# 32: the agent's limit already, so every id running in the field stays valid (a longer
# one, which the registry used to take, could never start an agent); the id rides in
# every topic and event id, and 32 keeps an event id well inside the platform's
# 128-character field.
MAX_LEN = 32
PUNCT = "._-"           # besides ASCII letters and digits; in this order for a regex class
PUNCT_BYTES = PUNCT.encode()

# The gateway's own broker user (the mosquitto password and ACL files hold it next to
# the devices'), and the prefixes of the MQTT client ids the gateway (edge-gateway-<id>)
# and edgectl connect with: a device of that name would take their place on the broker.
GATEWAY_USER = "gateway"
GATEWAY_CLIENT_PREFIX = "edge-gateway-"
TOOL_CLIENT_PREFIX = "edgectl-"
RESERVED = (GATEWAY_USER,)
# (prefix, whose names start with it); compared without the trailing '-' so that
# 'edge-gateway' itself is refused too
RESERVED_PREFIXES = ((GATEWAY_CLIENT_PREFIX[:-1], "the gateway's MQTT client ids"),
                     (TOOL_CLIENT_PREFIX[:-1], "edgectl's MQTT client ids"))

RULE = ("1-%d ASCII letters, digits, '.', '_' or '-', starting with a letter or digit; "
        "'%s' and names starting with '%s' or '%s' are reserved"
        % (MAX_LEN, GATEWAY_USER, RESERVED_PREFIXES[0][0], RESERVED_PREFIXES[1][0]))
# The characters and length as a regular expression, for the platform's API document
# (docs/platform-api.yaml); the reserved names are left to problem().
PATTERN = "^[A-Za-z0-9][A-Za-z0-9%s]{0,%d}$" % (PUNCT, MAX_LEN - 1)


def _alnum(c):
    # c: a byte. A board interns each one-character str it iterates over, for good: a
    # 32-character id would cost up to 32 names of its heap
    return 97 <= c <= 122 or 65 <= c <= 90 or 48 <= c <= 57


def problem(device_id):
    """None for a valid id, else what is wrong with it, as a phrase after the id."""
    if not isinstance(device_id, str):
        return "is not a string"
    n = len(device_id)
    if not n:
        return "is empty"
    if n > MAX_LEN:
        return "is %d characters long, more than %d" % (n, MAX_LEN)
    i = 0
    for c in device_id.encode():
        if not (_alnum(c) or c in PUNCT_BYTES):
            return "has %r (character %d), which is not an ASCII letter, digit, '.', '_' or '-'" % (device_id[i], i + 1)
        i += 1
    if not _alnum(device_id.encode()[0]):
        return "starts with %r; the first character must be a letter or digit" % device_id[0]
    # without case: 'Gateway' would be the same file as 'gateway' on some file systems
    low = device_id.lower()
    if low in RESERVED:
        return "is reserved: it is the gateway's broker user"
    for prefix, whose in RESERVED_PREFIXES:
        if low.startswith(prefix):
            return "is reserved: names starting with %r are %s" % (prefix, whose)
    return None


def check(device_id):
    """True, or ValueError saying what is wrong and what is allowed."""
    why = problem(device_id)
    if why:
        raise ValueError("%r %s; a device id is %s" % (device_id, why, RULE))
    return True
