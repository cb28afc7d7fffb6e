# The events the gateway makes itself (today: overdue maintenance and inspection,
# gateway/supervision.py), the one place they are defined. The device's events are
# edge/codes.py; these are not appended there because a board would carry every line of
# that table in RAM for events it never sends (its heap is full: docs/heap.md), and
# because a device must not be able to send them: edge.codec does not know these codes,
# so the gateway's ingest refuses one arriving over MQTT.
#
# A gateway-made event travels as a device's does (the store, the uplink, the platform's
# POST /v1/events), told apart by two things (docs/elevator-supervision.md):
#   - its id: <device>:GATEWAY_BOOT:<seq>. A device's boot is below 2**32 (edge.codec
#     refuses more), so no device event can have it; seq is made from the episode (its
#     due time) and the type and action, so the same fact made again after a restart is
#     the same event, a duplicate at the store and the platform, never a second alarm;
#   - no payload: there is no device MAC to check. The platform marks it VERIFIED, never
#     mac_ok, and takes it only from the gateway that signed the upload request.
from __future__ import annotations

from typing import Any

from edge.codec import MAX_ID
from edge.codes import CODES as DEVICE_CODES
from gateway.store import EventRow

GATEWAY_BOOT = MAX_ID                 # 2**32: above every device boot
VERIFIED = "gateway"                  # the platform's `verified` for these: made by the gateway, no device MAC

# CODES[code] = (name, kind, fields), as edge/codes.py. Codes from 0x80 up: the device
# table's are below, and a code only names an event inside the gateway's store.
CODES: dict[int, tuple[str, str, tuple[str, ...]]] = {
    # no genuine maintenance session for interval_d days. last_session: the end of the
    # latest (unix s; null: none seen since the gateway began watching), due: when the
    # next one was due. The clear carries the session that ended it.
    0x80: ("elevator.maintenance_overdue", "alarm", ("last_session", "due", "interval_d")),
    # the periodic inspection date provisioned in devices.json (inspection_due) is past
    0x81: ("elevator.inspection_overdue", "alarm", ("due",)),
}
BY_NAME = {entry[0]: code for code, entry in CODES.items()}
assert not set(CODES) & set(DEVICE_CODES), "a gateway code is also a device code"


def make(device: str, name: str, action: str, due: int, t: int, values: dict[str, Any]) -> EventRow:
    """The event of one overdue episode (identified by its due time) of one device.
    seq = due, then 7 bits of the code, then 1 bit raise/clear: one id per fact."""
    code = BY_NAME[name]
    seq = (due << 8) | ((code & 0x7F) << 1) | (action == "clear")
    fields = CODES[code][2]
    return EventRow(device, GATEWAY_BOOT, seq, code, name, CODES[code][1], action, t, True,
                    {f: values.get(f) for f in fields})
