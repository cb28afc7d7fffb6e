# Elevator monitor profile: the register map of the controller interface and the
# telemetry code. Detector thresholds live in edge/detect/elevator.py (PARAMS).
# Documented in docs/register-maps.md; the simulator, the agent and the tests all
# read this table.

NAME = "elevator"
PERIOD_S = 1            # poll once a second: door/overspeed alarms have a 5 s budget
FUNCTION = 3            # read holding registers
TELEMETRY = 0x01        # edge.codes: telemetry.elevator

# (field, register address, type, scale): value = raw * scale
REGISTERS = (
    ("mode", 0, "u16", 1),        # 0 normal, 1 inspection, 2 fire service, 3 out of service
    ("dir", 1, "i16", 1),         # -1 down, 0 none, 1 up
    ("speed", 2, "u16", 0.01),    # cm/s; 0xFFFF (655.35 m/s) is a classic glitch
    ("floor", 3, "i16", 1),       # no floor 0; basements negative
    ("door", 4, "u16", 1),        # 1 open, 0 closed
    ("zone", 5, "u16", 1),        # 1 inside the door (levelling) zone
    ("occupied", 6, "u16", 1),    # car presence sensor
    ("fault", 7, "u16", 1),       # controller fault code, 0 none
)

# Telemetry policy: a sample when one of these moves beyond its deadband (at most one a
# second), and a heartbeat every minute otherwise.
TELEMETRY_WATCH = {"mode": 0, "floor": 0, "door": 0, "fault": 0}
TELEMETRY_MIN_S = 1
TELEMETRY_HEARTBEAT_S = 60
