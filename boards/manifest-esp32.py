# Freeze manifest for ESP32 builds: the agent goes into the firmware, so its bytecode
# runs from flash and leaves the heap to the pipeline. It speaks MQTT itself (edge/link.py).
include("$(PORT_DIR)/boards/manifest.py")
package("edge", base_path="..")
