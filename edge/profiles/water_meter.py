# Household water meter profile (Modbus variant): register map and telemetry code.
# Detector thresholds live in edge/detect/water_meter.py (PARAMS). Documented in
# docs/register-maps.md.

NAME = "water_meter"
PERIOD_S = 60           # a household meter changes slowly; battery-powered meters sleep
FUNCTION = 3            # read holding registers
TELEMETRY = 0x02        # edge.codes: telemetry.water_meter

# (field, register address, type, scale): value = raw * scale.
# 32-bit values span two registers; their word order is a per-device setting.
REGISTERS = (
    ("total", 0, "u32", 0.001),   # litres -> m3 (0.001 m3 resolution)
    ("flow", 2, "f32", 1),        # m3/h, IEEE-754 float
    ("battery", 4, "u16", 0.01),  # 10 mV -> V
)

# Telemetry policy: a sample when flow starts, stops or changes by 0.05 m3/h, at most
# every 5 minutes, and every 15 minutes otherwise.
TELEMETRY_WATCH = {"flow": 0.05, "battery": 0.05}
TELEMETRY_MIN_S = 300
TELEMETRY_HEARTBEAT_S = 900
