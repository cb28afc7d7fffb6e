# Sensor profiles: one module per kind of device (its reading fields and telemetry code;
# its register map is data, edge/maps/<profile>.json),
# with a detector of the same name in edge/detect/. NAMES is the one list of them that
# the config schema, the gateway's registry and the tools' --profile choices import.
NAMES = ("elevator", "water_meter", "noise", "structure", "water_quality")
