# Freeze manifest for ESP32 builds: the agent and umqtt.simple go into the firmware, so
# their bytecode runs from flash and leaves the heap to the pipeline.
include("$(PORT_DIR)/boards/manifest.py")
require("umqtt.simple")
package("edge", base_path="..")
