# Start-up, run once and then unloaded (edge.agent.main): read and check the config and
# open the hardware. None of it is needed once the agent is built, and on a board every
# byte of code is heap (the config schema alone is 9 KB), so it goes before the agent's
# pipeline, the largest allocation, is built.
import gc
import sys


def unload(name):
    """Forget a module (edge.<name>, edge.profiles.<name>) so the next collection frees
    its code."""
    sys.modules.pop(name, None)
    parent, _, leaf = name.rpartition(".")
    try:
        delattr(sys.modules[parent], leaf)
    except (KeyError, AttributeError):
        pass


def load_config(path):
    """(config, None), or (None, what is wrong). The validator and the id rule are
    unloaded after use (the line's framing, edge.line, once build() has opened the bus),
    and the profile the map was checked against: the agent loads it again once the
    validator's heap is free, rather than have it split that space. The file is parsed
    before the validator is loaded: the config's objects, which live until the agent is
    built, then sit below its code instead of splitting the space it frees."""
    import json
    # what the agent keeps of the bus protocol (Modbus framing and register decoding, or
    # CJ/T 188 framing), loaded first, as the agent's own imports are: loaded after the
    # config's objects, it splits the space they and the validator free for the
    # pipeline (the elevator and water quality agents then no longer build in 96k). The
    # file is only looked at for it here, then read again; a wrong guess (the word in
    # another field) costs placement, not correctness: build() loads what the config says
    try:
        with open(path) as f:
            cjt = "cjt188" in f.read()
    except (OSError, ValueError):
        cjt = False
    gc.collect()
    if cjt:
        from edge import cjt188  # noqa: F401
    else:
        from edge import modbus, regmap  # noqa: F401
    try:
        with open(path) as f:
            cfg = json.loads(f.read())
    except (OSError, ValueError):
        cfg = None      # edge.config.load reads it again and says what is wrong
    from edge import config
    try:
        cfg = config.load(path, cfg)
    except config.ConfigError as e:
        return None, str(e)
    finally:
        del config
        for name in list(sys.modules):
            if name.startswith("edge.profiles."):
                unload(name)
        unload("edge.config")
        unload("edge.ids")
        gc.collect()
    # the map cut into the agent's reads in the space the checker left, and dropped
    from edge import reads
    cfg["reads"] = reads.reads(cfg)
    cfg["map"] = None
    del reads
    unload("edge.reads")
    if cfg["bus"].get("protocol") == "cjt188":
        unload("edge.regmap")       # a CJ/T 188 meter's reading needs no register types
    gc.collect()
    return cfg, None


def master(uart, bus):
    """The master of the device's bus protocol (the agent's and the self-test's)."""
    from edge import line
    bits = line.char_bits(bus["parity"], bus["stop"])
    # one protocol's code on a board: a CJ/T 188 meter's master never loads Modbus framing
    if bus.get("protocol") == "cjt188":
        from edge.cjt188_bus import Master
        return Master(uart, bus, bits)
    from edge.bus import Master
    # no writable ranges: a board sends no write (edge.bus.Master.transact)
    return Master(uart, bus["baud"], bus["timeout_ms"], bus["retries"], bits)


def build(cfg, state_dir, log):
    """This runtime's hardware for the agent: (master, link, store, outbox, clock)."""
    from edge import hal, line
    from edge.link import Link
    from edge.outbox import Outbox
    from edge.state import FileStore
    bus = cfg["bus"]
    try:
        uart = hal.open_uart(bus)
    except OSError as e:
        raise OSError("cannot open the sensor bus %s: %s; check the port and its permissions" % (bus["port"], e))
    bus_master = master(uart, bus)
    del line
    unload("edge.line")
    link = Link(cfg["broker"], cfg["device_id"], log)
    store = FileStore(state_dir)
    ob = cfg["outbox"]
    outbox = Outbox(state_dir + "/outbox", ob["kb"] * 1024, ob["segment_kb"] * 1024)
    return bus_master, link, store, outbox, hal.now


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
