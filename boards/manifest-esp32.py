# Freeze manifest for ESP32 builds: the agent goes into the firmware, so its bytecode
# runs from flash and leaves the heap to the pipeline. It speaks MQTT itself (edge/link.py).
# `edgectl provision` writes build/<board>/manifest.py: these lines, then the agent's
# package line listing only the modules a board runs (tools/common/runtime.py).
include("$(PORT_DIR)/boards/manifest.py")
