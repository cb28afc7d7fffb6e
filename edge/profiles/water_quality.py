# River water-quality station profile: several single-parameter probes on one RS-485
# bus, each its own slave, read in one poll. The register map and the telemetry code;
# detector thresholds and the GB 3838-2002 limits live in edge/detect/water_quality.py.
# Documented, with the source of each vendor map, in docs/register-maps.md and
# docs/water-quality.md.

NAME = "water_quality"
PERIOD_S = 60           # minute-level monitoring; wq.pollution has a 1800 s budget
FUNCTION = 3            # every probe here is read with FC 03
TELEMETRY = 0x03        # edge.codes: telemetry.water_quality

# The probes' default slave ids, by probe number (the fifth column below); a station's
# own ids are the device config's bus.slaves, in the same order. The two Supmea probes
# both ship as slave 1: an installer sets one of them to 2 before wiring them together.
SLAVES = (1, 2, 10, 3, 4)

# (field, register address, type, scale, probe): value = raw * scale, read from the
# slave SLAVES[probe] (or bus.slaves[probe]); one block read a probe.
# Fields in the order of telemetry.water_quality, which device.sensor_health's field
# index follows.
REGISTERS = (
    ("ph", 1, "i16", 0.01, 0),    # Supmea SUP-PH8001 pH: 1 pH x0.01
    ("do", 1, "i16", 0.01, 1),    # Supmea SUP-DO7013: 1 DO x0.01 mg/L (0 is its temperature)
    ("nh3n", 16, "f32", 1, 2),    # BOQU BH-485-NH: 16-17 NH3-N mg/L float (word order unstated)
    ("tp", 0, "f32", 1, 3),       # total phosphorus analyser: no public map, placeholder
    ("temp", 0, "i16", 0.1, 0),   # Supmea SUP-PH8001: 0 temperature x0.1 C
    ("turb", 0, "f32", 1, 4),     # turbidity probe: no public map, placeholder
)

# Telemetry policy: a sample when a parameter moves by about a tenth of a class step,
# at most every 5 minutes, and every 15 minutes otherwise.
TELEMETRY_WATCH = {"ph": 0.2, "do": 0.5, "nh3n": 0.1, "tp": 0.02, "turb": 10.0}
TELEMETRY_MIN_S = 300
TELEMETRY_HEARTBEAT_S = 900
