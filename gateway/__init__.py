# The CPython gateway: MQTT ingest -> SQLite store -> HTTP uplink, plus the device
# registry, an embedded broker and the reference district-platform receiver.
# Start reading at service.py (how the parts are wired) and docs/gateway.md (why).
