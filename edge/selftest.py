# On-board self-test, run by `edgectl provision` after a deploy: one read of the sensor
# and one connection to the broker as the agent makes it, with the config exactly as
# deployed. Prints one line,
#   SELFTEST {"config": ..., "bus": {...}, "broker": {...}}
# which the installer's laptop turns into plain words. Never prints the secret.
#   mpremote resume exec "import edge.selftest as t; t.main()"
import json
import sys
import time


def check_config(path):
    from edge import config
    try:
        return config.load(path), {"ok": True}
    except config.ConfigError as e:
        return None, {"ok": False, "error": "config", "detail": str(e)}


class _Agent:
    """What a master's read asks of the agent: the time, and where a report goes
    (the self-test sends none)."""
    now = time.time

    def emit(*event):
        pass


def check_bus(cfg):
    from edge import hal
    from edge.boot import master as open_master
    from edge.bus import KINDS, BusError
    from edge.reads import reads
    bus = cfg["bus"]
    try:
        uart = hal.open_uart(bus)
    except OSError as e:
        return {"ok": False, "error": "open", "detail": str(e)}
    master = open_master(uart, bus)
    # every probe of the device must answer, read as edge/agent.py reads it
    blocks, slaves, _ = reads(cfg)
    reading = {}
    try:
        for probe, fc, first, count, table in blocks:
            reading.update(master.read(slaves[probe], fc, first, count, table, _Agent))
    except BusError as e:
        return {"ok": False, "error": KINDS.get(e.kind, "bus"), "code": e.code, "detail": str(e)}
    finally:
        uart.close()
    return {"ok": True, "reading": reading}


def check_broker(cfg):
    """Connect as the agent does (edge.link), which publishes "online" on the device's
    status topic: the installer's laptop, subscribed there as the gateway, sees it arrive
    only if the broker took the device's password and its ACL lets it write there."""
    from edge.link import Link, LinkDown
    link = Link(cfg["broker"], cfg["device_id"], lambda *a: None)
    try:
        link.connect()
    except LinkDown as e:
        why = str(e)
        # a CONNACK refusal (4: bad user name or password, 5: not authorised) is an
        # answer from the broker; anything else means it was not reached
        refused = "CONNACK" in why or why.strip() in ("4", "5")
        return {"ok": False, "error": "refused" if refused else "unreachable", "detail": why}
    link.close()
    return {"ok": True}


def run(path="config.json"):
    cfg, result = check_config(path)
    report = {"config": result}
    if cfg is not None:
        report["bus"] = check_bus(cfg)
        report["broker"] = check_broker(cfg)
    return report


def main(path="config.json"):
    print("SELFTEST " + json.dumps(run(path)))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "config.json")
