# River water-quality station profile: several single-parameter probes on one RS-485
# bus, each its own slave, read in one poll. Its poll period, reading fields and telemetry code;
# detector thresholds and the GB 3838-2002 limits live in edge/detect/water_quality.py.
# Documented, with the source of each vendor map, in docs/register-maps.md and
# docs/water-quality.md.

NAME = "water_quality"
PERIOD_S = 60           # minute-level monitoring; wq.pollution has a 1800 s budget
TELEMETRY = 0x03        # edge.codes: telemetry.water_quality, whose fields a reading has

# The register map is data: edge/maps/water_quality.json names a map a probe, and probe
# i answers as the device config's bus.slaves[i] (default: the map's slaves, 1, 2, 10,
# 3, 4); or the device config's "map" (docs/register-maps.md). It must give every
# telemetry field but these (no public map of a phosphorus or turbidity probe was found)
OPTIONAL = ("tp", "turb", "temp")

# Telemetry policy: a sample when a parameter moves by about a tenth of a class step,
# at most every 5 minutes, and every 15 minutes otherwise.
TELEMETRY_WATCH = {"ph": 0.2, "do": 0.5, "nh3n": 0.1, "tp": 0.02, "turb": 10.0}
TELEMETRY_MIN_S = 300
TELEMETRY_HEARTBEAT_S = 900
