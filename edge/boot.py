# Start-up, run once and then unloaded (edge.agent.main): read and check the config and
# open the hardware. None of it is needed once the agent is built, and on a board every
# byte of code is heap (the config schema alone is 9 KB), so it goes before the agent's
# pipeline, the largest allocation, is built.
import gc
import sys


def unload(name):
    """Forget a module (edge.<name>) so the next collection frees its code."""
    import edge
    sys.modules.pop(name, None)
    try:
        delattr(edge, name.split(".")[1])
    except AttributeError:
        pass


def load_config(path):
    """(config, None), or (None, what is wrong). The validator and the id rule are
    unloaded after use (the line's framing, edge.line, once build() has opened the bus)."""
    from edge import config
    try:
        return config.load(path), None
    except config.ConfigError as e:
        return None, str(e)
    finally:
        del config
        unload("edge.config")
        unload("edge.ids")
        gc.collect()


def build(cfg, state_dir, log):
    """This runtime's hardware for the agent: (master, link, store, outbox, clock)."""
    from edge import hal, line
    from edge.bus import Master
    from edge.link import Link
    from edge.outbox import Outbox
    from edge.state import FileStore
    bus = cfg["bus"]
    try:
        uart = hal.open_uart(bus)
    except OSError as e:
        raise OSError("cannot open the sensor bus %s: %s; check the port and its permissions" % (bus["port"], e))
    master = Master(uart, bus["baud"], bus["timeout_ms"], bus["retries"],
                    line.char_bits(bus["parity"], bus["stop"]))
    del line
    unload("edge.line")
    link = Link(cfg["broker"], cfg["device_id"], log)
    store = FileStore(state_dir)
    ob = cfg["outbox"]
    outbox = Outbox(state_dir + "/outbox", ob["kb"] * 1024, ob["segment_kb"] * 1024)
    return master, link, store, outbox, hal.now


def start(argv, log):
    """(config, (master, link, store, outbox, clock)), or (None, exit status) after
    saying why."""
    path = argv[1] if len(argv) > 1 else "config.json"
    if path in ("-h", "--help"):
        print("usage: agent.py [CONFIG_JSON] [STATE_DIR]\n"
              "Runs the edge agent: polls the sensor, filters alarms, publishes events.")
        return None, 0
    cfg, error = load_config(path)
    if error:
        print("config error: %s" % error)
        return None, 2
    try:
        return cfg, build(cfg, argv[2] if len(argv) > 2 else "state", log)
    except OSError as e:
        print(e)
        return None, 3
