"""The device id rule (edge/ids.py) is one rule: the agent's config check under both
runtimes, the gateway's registry and `edge-gateway devices add`, and the platform
receiver accept and refuse the same ids, and every refusal says what is wrong and what
is allowed."""
from __future__ import annotations

import base64
import copy
import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, strategies as st

from edge import codec, ids
from edge.config import ConfigError, validate
from gateway.cli import main
from gateway.platform import ValidationError, validate_event
from gateway.registry import DEVICE_ID_RE, Registry, RegistryError
from tools.common import runtime

SECRET = "ab" * 32
CFG = {"device_id": "x", "secret": SECRET, "profile": "water_meter",
       "bus": {"port": "/dev/ttyUSB0"}, "broker": {"host": "127.0.0.1"}}

ACCEPT = ["elev-0001", "wm-7", "A", "7", "b7.lift_2", "x" * 32, "gateway1", "my-gateway",
          "edge-gatewa", "edgect1", "EDGE.gateway"]
# id -> what the refusal must say is wrong
REFUSE = {
    "é-lift": "has 'é' (character 1)",
    "lift-é": "has 'é' (character 6)",
    "电梯-1": "has '电' (character 1)",
    "..": "starts with '.'",
    ".": "starts with '.'",
    ".hidden": "starts with '.'",
    "-rf": "starts with '-'",
    "_x": "starts with '_'",
    "x" * 33: "is 33 characters long, more than 32",
    "x" * 40: "is 40 characters long, more than 32",
    "x" * 64: "is 64 characters long, more than 32",
    "": "is empty",
    "gateway": "is reserved: it is the gateway's broker user",
    "Gateway": "is reserved: it is the gateway's broker user",
    "edge-gateway": "is reserved: names starting with 'edge-gateway'",
    "edge-gateway-site1": "is reserved: names starting with 'edge-gateway'",
    "edgectl-provision-42": "is reserved: names starting with 'edgectl'",
    "+": "has '+' (character 1)",
    "#": "has '#' (character 1)",
    "dev/+": "has '/' (character 4)",
    "a/b": "has '/' (character 2)",
    " x": "has ' ' (character 1)",
    "x ": "has ' ' (character 2)",
    "a\tb": "has '\\t' (character 2)",
    "a\nb": "has '\\n' (character 2)",
    "a\x00b": "has '\\x00' (character 2)",
    "a:b": "has ':' (character 2)",
    "%u": "has '%' (character 1)",
    "$SYS": "has '$' (character 1)",
    "a*b": "has '*' (character 2)",
}
TABLE = [(v, None) for v in ACCEPT] + sorted(REFUSE.items())


def config_verdict(device_id: str) -> str | None:
    cfg = copy.deepcopy(CFG)
    cfg["device_id"] = device_id
    try:
        validate(cfg)
    except ConfigError as e:
        return str(e)
    return None


def registry_verdict(device_id: str, tmp: Path) -> str | None:
    try:
        Registry(tmp / "devices.json").add(device_id, "water_meter", SECRET)
    except RegistryError as e:
        return str(e)
    return None


def platform_verdict(device_id: str) -> str | None:
    # the signed bytes under another id (the platform holds no key here; it checks that
    # they say what the JSON says)
    payload = codec.encode(codec.Signer(b"k" * 16, "any"), codec.BY_NAME["device.boot"], 0, 1, 1, 0, [None])
    event = {"device": device_id, "boot": 1, "seq": 1, "id": "%s:1:1" % device_id, "type": "device.boot",
             "action": "report", "t": 0, "clock_set": True, "values": {"version": None},
             "payload": base64.b64encode(payload).decode()}
    try:
        validate_event(event, "events[0]")
    except ValidationError as e:
        return str(e)
    return None


@pytest.mark.parametrize("device_id,why", TABLE)
def test_the_rule(device_id: str, why: str | None) -> None:
    if why is None:
        assert ids.problem(device_id) is None and ids.check(device_id) is True
    else:
        assert why in ids.problem(device_id)
        with pytest.raises(ValueError) as e:
            ids.check(device_id)
        # what is wrong, with the id as typed, and what is allowed
        assert str(e.value) == "%r %s; a device id is %s" % (device_id, ids.problem(device_id), ids.RULE)


@pytest.mark.parametrize("device_id,why", TABLE)
def test_agent_config_gateway_registry_and_platform_agree(tmp_path: Path, device_id: str,
                                                          why: str | None) -> None:
    verdicts = [config_verdict(device_id), registry_verdict(device_id, tmp_path), platform_verdict(device_id)]
    if why is None:
        assert verdicts == [None, None, None]
        return
    if not device_id:   # the platform's own check of its JSON strings speaks first
        assert verdicts[2] == "events[0].device: must be a non-empty string of at most 128 characters"
        verdicts.pop()
    for message, lead in zip(verdicts, ("config.device_id: ", "device id ", "events[0].device: ")):
        assert message is not None and message.startswith(lead + repr(device_id)), message
        assert why in message and ids.RULE in message


def test_micropython_agent_agrees_with_cpython(tmp_path: Path) -> None:
    """The agent's own config check under the unix port, on every case of the table: the
    rule must not lean on CPython's notion of a letter (str.isalpha says yes to 'é')."""
    cases = [v for v, _ in TABLE]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    code = ("import json\nfrom edge import config\n"
            "base = %s\n"
            "for v in json.load(open(%r)):\n"
            "    c = json.loads(json.dumps(base)); c['device_id'] = v\n"
            "    try:\n"
            "        config.validate(c); print(json.dumps(None))\n"
            "    except config.ConfigError as e:\n"
            "        print(json.dumps(str(e)))\n" % (json.dumps(CFG), str(tmp_path / "cases.json")))
    out = subprocess.run([runtime.micropython(), "-c", code], env=runtime.micropython_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    verdicts = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(verdicts) == len(cases)
    for device_id, verdict in zip(cases, verdicts):
        expected = config_verdict(device_id)
        if expected is None or device_id.isascii():
            assert verdict == expected, device_id
        else:
            # the same words and the same character; MicroPython's repr escapes non-ASCII
            where = re.search(r"\(character \d+\)", expected)
            assert where and where.group() in verdict and verdict.endswith(ids.RULE), (device_id, verdict)


ALPHABET = st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Z", "Cc"))
TEXT = st.text(ALPHABET, max_size=40) | st.from_regex(DEVICE_ID_RE, fullmatch=True)


@given(TEXT)
def test_any_id_gets_one_verdict(device_id: str) -> None:
    ok = ids.problem(device_id) is None
    assert (config_verdict(device_id) is None) == ok
    assert (platform_verdict(device_id) is None) == ok
    # the pattern (docs/platform-api.yaml) is the rule's characters and length
    reserved = ids.problem(device_id) is not None and "is reserved" in ids.problem(device_id)
    assert bool(DEVICE_ID_RE.fullmatch(device_id)) == (ok or reserved)
    if ok:   # what the rule is for, said the long way round
        assert device_id.isascii() and not re.search(r"[+#/\x00:%$*\s]", device_id)
        assert device_id not in (".", "..") and device_id[0] not in ".-"
        assert 1 <= len(device_id.encode()) <= ids.MAX_LEN


@given(TEXT)
def test_the_registry_agrees_too(device_id: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        assert (registry_verdict(device_id, Path(tmp)) is None) == (ids.problem(device_id) is None)


def test_a_40_character_id_is_refused_by_devices_add(tmp_path: Path, capsys: Any) -> None:
    """The disagreement that started it: the registry took 1-64, the agent 1-32."""
    long_id = "elev-" + "0" * 35
    assert main(["devices", "add", long_id, "--profile", "elevator", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "device id %r is 40 characters long, more than 32" % long_id in err and ids.RULE in err
    assert not (tmp_path / "devices.json").exists()


def test_a_registry_file_with_an_id_the_agent_refuses_is_named(tmp_path: Path) -> None:
    (tmp_path / "devices.json").write_text(json.dumps({"gateway": {"secret": SECRET, "profile": "elevator"}}))
    with pytest.raises(RegistryError, match="device 'gateway': device id 'gateway' is reserved"):
        Registry.in_dir(tmp_path)


def test_the_gateways_own_broker_names_are_reserved() -> None:
    from tools.common import credentials
    assert ids.problem(credentials.GATEWAY_USER) is not None
    assert ids.problem(ids.GATEWAY_CLIENT_PREFIX + "site-gw-01") is not None
    assert ids.problem(ids.TOOL_CLIENT_PREFIX + "provision-1234") is not None


def test_the_agent_unloads_the_rule_after_boot(tmp_path: Path) -> None:
    """Boot-time only: the running agent does not carry the rule."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(CFG, device_id="wm-0001")))
    code = ("import sys\nfrom edge import boot\ncfg, err = boot.load_config(%r)\n"
            "print(err, cfg['device_id'], 'edge.ids' in sys.modules, 'edge.config' in sys.modules)" % str(path))
    out = subprocess.run([runtime.micropython(), "-c", code], env=runtime.micropython_env(),
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["None", "wm-0001", "False", "False"], out.stderr
