# Household water meter profile (Modbus variant): its poll period, reading fields and telemetry code.
# Detector thresholds live in edge/detect/water_meter.py (PARAMS). Documented in
# docs/register-maps.md.

NAME = "water_meter"
PERIOD_S = 60           # a household meter changes slowly; battery-powered meters sleep
TELEMETRY = 0x02        # edge.codes: telemetry.water_meter, whose fields a reading has

# The register map is data: edge/maps/water_meter.json (or the device config's "map",
# docs/register-maps.md, e.g. tuf-2000m); it must give every telemetry field but these
# (a mains-powered meter has no battery)
OPTIONAL = ("battery",)

# Telemetry policy: a sample when flow starts, stops or changes by 0.05 m3/h, at most
# every 5 minutes, and every 15 minutes otherwise.
TELEMETRY_WATCH = {"flow": 0.05, "battery": 0.05}
TELEMETRY_MIN_S = 300
TELEMETRY_HEARTBEAT_S = 900
