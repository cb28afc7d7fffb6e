# On-board self-test, run by `edgectl provision` after a deploy: one read of the sensor
# and one connection to the broker, with the config exactly as deployed. Prints one line,
#   SELFTEST {"config": ..., "bus": {...}, "broker": {...}}
# which the installer's laptop turns into plain words. Never prints the secret.
#   mpremote resume exec "import edge.selftest as t; t.main()"
import json
import select
import sys

from edge.clock import ticks_add, ticks_diff, ticks_ms


def check_config(path):
    from edge import config
    try:
        return config.load(path), {"ok": True}
    except config.ConfigError as e:
        return None, {"ok": False, "error": "config", "detail": str(e)}


def check_bus(cfg):
    from edge import hal, regmap
    from edge.bus import Master
    from edge.modbus import KINDS, ModbusError
    from edge.pipeline import load_module
    bus = cfg["bus"]
    prof = load_module("edge.profiles." + cfg["profile"])
    try:
        uart = hal.open_uart(bus)
    except OSError as e:
        return {"ok": False, "error": "open", "detail": str(e)}
    first, count = regmap.span(prof.REGISTERS)
    master = Master(uart, bus["baud"], bus["timeout_ms"], bus["retries"])
    try:
        words = master.read_registers(bus["slave"], prof.FUNCTION, first, count)
    except ModbusError as e:
        return {"ok": False, "error": KINDS.get(e.kind, "modbus"), "code": getattr(e, "code", 0),
                "detail": str(e)}
    finally:
        uart.close()
    return {"ok": True, "reading": regmap.decode(prof.REGISTERS, words, bus["word_order"], first)}


def check_broker(cfg):
    from umqtt.simple import MQTTClient, MQTTException
    b = cfg["broker"]
    dev = cfg["device_id"]
    # its own client id, so a still-open agent session is not taken over
    c = MQTTClient(dev + "-selftest", b["host"], b["port"], b.get("user"), b.get("password"), 30)
    try:
        c.connect()
    except MQTTException as e:
        # CONNACK return code: 4 bad user name or password, 5 not authorised
        return {"ok": False, "error": "refused", "code": e.args[0] if e.args else 0}
    except (OSError, IndexError) as e:
        return {"ok": False, "error": "unreachable", "detail": str(e)}
    # a round trip through the broker proves both ACL lines: the device may write under
    # dev/<id>/ and read dev/<id>/cmd/ (mosquitto grants any subscription and filters later)
    topic = ("dev/%s/cmd/selftest" % dev).encode()
    got = []
    c.set_callback(lambda t, msg: got.append(msg))
    try:
        c.subscribe(topic, 0)
        c.publish(topic, b"selftest", False, 0)
        poller = select.poll()
        poller.register(c.sock, select.POLLIN)
        deadline = ticks_add(ticks_ms(), 3000)
        while not got:
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0 or not poller.poll(left):
                break
            c.wait_msg()
    except (OSError, MQTTException, IndexError) as e:
        return {"ok": False, "error": "unreachable", "detail": "connection lost: %r" % (e,)}
    finally:
        try:
            c.disconnect()
        except OSError:
            pass
    if not got:
        return {"ok": False, "error": "acl", "detail": "dev/%s/cmd/selftest did not come back" % dev}
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
