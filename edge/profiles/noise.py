# Construction-site noise profile: a sound level meter on RS-485 (Sonbest SM7901B /
# SM6365B and the drivers that share its layout) and the telemetry code. Detector
# thresholds live in edge/detect/noise.py (PARAMS). Documented in docs/register-maps.md
# and docs/noise.md.

NAME = "noise"
PERIOD_S = 10           # a 10 s Leq a poll: night construction has a 900 s budget
FUNCTION = 3            # read holding registers
TELEMETRY = 0x04        # edge.codes: telemetry.noise

# (field, register address, type, scale): value = raw * scale
REGISTERS = (
    ("laeq", 0, "u16", 0.1),      # dB(A) x 10 (0x0218 = 53.6 dB), Sonbest register 0
)

# Telemetry policy: a sample when the level moves by 3 dB (at most one a minute), and
# one every 5 minutes otherwise.
TELEMETRY_WATCH = {"laeq": 3.0}
TELEMETRY_MIN_S = 60
TELEMETRY_HEARTBEAT_S = 300
