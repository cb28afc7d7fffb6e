# Construction-site noise profile: a sound level meter on RS-485 (Sonbest SM7901B /
# SM6365B and the drivers that share its layout) its poll period, reading fields and telemetry code. Detector
# thresholds live in edge/detect/noise.py (PARAMS). Documented in docs/register-maps.md
# and docs/noise.md.

NAME = "noise"
PERIOD_S = 10           # a 10 s Leq a poll: night construction has a 900 s budget
TELEMETRY = 0x04        # edge.codes: telemetry.noise, whose fields a reading has

# The register map is data: edge/maps/noise.json, the Sonbest layout (or the device
# config's "map", docs/register-maps.md); it must give every telemetry field but these
OPTIONAL = ()

# Telemetry policy: a sample when the level moves by 3 dB (at most one a minute), and
# one every 5 minutes otherwise.
TELEMETRY_WATCH = {"laeq": 3.0}
TELEMETRY_MIN_S = 60
TELEMETRY_HEARTBEAT_S = 300
