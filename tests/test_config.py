"""Device config: a wrong or missing field gets an error naming it, under both runtimes."""
import copy
import json
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from edge.config import SCHEMA, ConfigError, validate
from tools.common import runtime

GOOD = {
    "device_id": "elev-0001", "secret": "00112233445566778899aabbccddeeff", "profile": "elevator",
    "bus": {"port": "/dev/ttyUSB0", "baud": 9600, "slave": 3},
    "broker": {"host": "127.0.0.1"},
    "site": {"rated_speed": 1.75, "floors": [-1, 18]},
}


def test_defaults_are_filled_in():
    cfg = validate(copy.deepcopy(GOOD))
    # no word order: the map's (each field of the map carries it, ABCD unless it says)
    assert cfg["bus"]["parity"] == "E" and "word_order" not in cfg["bus"]
    assert [f["name"] for f in cfg["map"]["fields"]][:2] == ["mode", "dir"] and cfg["map"]["confidence"] == "project"
    assert cfg["bus"]["timeout_ms"] == 300 and cfg["broker"]["port"] == 1883
    assert cfg["utc_offset_s"] == 28800


@pytest.mark.parametrize("mutate,field", [
    (lambda c: c.pop("device_id"), "config.device_id: required"),
    (lambda c: c["bus"].update(baud=9601), "config.bus.baud: 9601 is not one of"),
    (lambda c: c["bus"].update(slave=0), "config.bus.slave"),
    (lambda c: c["bus"].update(parity="X"), "config.bus.parity"),
    (lambda c: c["bus"].update(word_order="AB"), "config.bus.word_order"),
    (lambda c: c["bus"].update(speed=3), "config.bus.speed: unknown field"),
    (lambda c: c.update(profile="toaster"), "config.profile: 'toaster' is not one of elevator, water_meter"),
    (lambda c: c["site"].pop("rated_speed"), "config.site.rated_speed: required"),
    (lambda c: c["site"].update(floors=[5, 1]), "config.site.floors"),
    (lambda c: c.update(secret="short"), "config.secret"),
    (lambda c: c.update(secret=" " * 40), "config.secret"),            # bytes.fromhex: an empty key
    (lambda c: c.update(secret="0" * 33), "even number of hex digits"),
    (lambda c: c.update(profile=[]), "config.profile: must be str, got []"),   # once a TypeError
    (lambda c: c.update(profile={}), "config.profile"),
    (lambda c: c.update(boot_floor=-1), "config.boot_floor"),
    (lambda c: c["broker"].update(port="1883"), "config.broker.port: must be int"),
    (lambda c: c.update(colour="red"), "config.colour: unknown field"),
])
def test_bad_field_is_named(mutate, field):
    cfg = copy.deepcopy(GOOD)
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert field in str(err.value)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_json_is_a_config_or_a_config_error(data):
    cfg = copy.deepcopy(GOOD)
    # replace one field (or one section's field) of a good config with anything
    path = data.draw(st.sampled_from(sorted(SCHEMA) + ["bus", "broker", "site", "profile", "secret"]))
    node = cfg
    for part in path.split(".")[:-1]:
        node = node.setdefault(part, {})
    node[path.split(".")[-1]] = data.draw(JSON)
    try:
        validate(cfg)
    except ConfigError:
        pass
    try:
        validate(data.draw(JSON))
    except ConfigError:
        pass


def test_unknown_threshold_override_is_named():
    from edge.pipeline import Pipeline
    with pytest.raises(ValueError, match="params.no_such_threshold: unknown parameter"):
        Pipeline("water_meter", {}, {"no_such_threshold": 3})


@pytest.mark.parametrize("text,message", [
    ("{not json", "not valid JSON"),
    (json.dumps(dict(GOOD, bus={"baud": 9600})), "config.bus.port: required field is missing"),
])
def test_agent_refuses_a_bad_config_file_under_micropython(tmp_path, text, message):
    path = tmp_path / "config.json"
    path.write_text(text)
    proc = subprocess.run(runtime.command("micropython", "edge.agent", str(path), str(tmp_path / "state")),
                          env=runtime.micropython_env(), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert message in proc.stdout


def test_agent_says_when_the_bus_cannot_be_opened(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(GOOD, bus={"port": str(tmp_path / "no-such-tty")})))
    proc = subprocess.run(runtime.command("micropython", "edge.agent", str(path), str(tmp_path / "state")),
                          env=runtime.micropython_env(), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 3
    assert "cannot open the sensor bus" in proc.stdout


def test_profile_and_word_order_choices_come_from_their_homes():
    """One list of profiles (edge/profiles/__init__.py), one of word orders (edge/regmap.py)."""
    import pkgutil
    from edge import profiles, regmap
    from edge import detect
    from edge.codec import BY_NAME
    from edge import mapcheck
    from edge.config import SCHEMA
    from gateway import registry
    assert SCHEMA["profile"][2] is profiles.NAMES and registry.PROFILES is profiles.NAMES
    assert SCHEMA["bus.word_order"][2] is regmap.ORDERS and SCHEMA["bus.word_order"][1] is None
    assert mapcheck.FIELD_SCHEMA["word_order"][2] is regmap.ORDERS
    assert mapcheck.FIELD_SCHEMA["type"][2] == tuple(regmap.WORDS)
    modules = sorted(m.name for m in pkgutil.iter_modules(profiles.__path__))
    assert modules == sorted(profiles.NAMES)
    # a detector per profile, beside what detectors share (common: comm loss; health: reports)
    shared = ("common", "health")
    assert sorted(m.name for m in pkgutil.iter_modules(detect.__path__) if m.name not in shared) == modules
    for name in profiles.NAMES:
        module = __import__("edge.profiles." + name, None, None, ["NAME"])
        assert module.NAME == name and "telemetry." + name in BY_NAME
        assert mapcheck.profile_map(name, None)["fields"]    # its map: edge/maps/<profile>.json
