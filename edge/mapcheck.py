# Register maps as data (docs/register-maps.md): the schema of a map, whose errors name
# the field; the maps the project ships (edge/maps/NAME.json, a map of probes resolved
# into one); the map a profile's agent decodes with. edge.config.validate checks a
# device config's map with it. Like edge/modbus_write.py, not sent to boards: edgectl
# provision checks the map it puts into a board's config.
import json

from edge import reads, regmap
from edge.config import REQUIRED, ConfigError, _check_value, _slaves


# A map's schema (docs/register-maps.md): what a map, each of its fields and each of
# its writable ranges may hold, as SCHEMA above: key: (kind, default, check, allowed).
CONFIDENCE = ("vendor manual", "vendor page", "vendor documentation", "third-party driver", "unofficial",
              "placeholder", "project")
_TEXT = ("str", None, None, None)
_ADDRESS = ("int", REQUIRED, lambda v: 0 <= v <= 0xFFFF, "0..65535")
_PROBE = ("int", 0, lambda v: 0 <= v < 32, "0..31, an index into the map's slaves")
MAP_SCHEMA = {
    "model": _TEXT, "source": _TEXT, "serial": _TEXT, "note": _TEXT, "profile": _TEXT,
    "confidence": ("str", None, CONFIDENCE, None),
    "function": ("int", 3, (3, 4), None),
    "word_order": ("str", None, regmap.ORDERS, None),
    "slave": ("int", 1, lambda v: 1 <= v <= 247, "1..247"),
    "slaves": ("any", None, _slaves, "a list of distinct slave ids, 1..247, one a probe"),
    "fields": ("list", REQUIRED, lambda v: 0 < len(v) <= 256, "1..256 fields"),
    "writable": ("list", None, None, None),
    "vectors": ("list", None, None, None),
}
FIELD_SCHEMA = {
    "name": ("str", REQUIRED, lambda v: 0 < len(v) <= 32, "a name of 1..32 characters"),
    "address": _ADDRESS,
    "type": ("str", REQUIRED, tuple(regmap.WORDS), None),
    "scale": ("num", 1, lambda v: v != 0 and abs(v) < 1e9 and v == v, "a non-zero number"),
    # default: the map's
    "function": ("int", None, (3, 4), None),
    "word_order": ("str", None, regmap.ORDERS, None),
    "probe": _PROBE,
    "unit": _TEXT, "note": _TEXT,
}
WRITABLE_SCHEMA = {"address": _ADDRESS, "count": ("int", 1, lambda v: 1 <= v <= 123, "1..123"),
                   "probe": _PROBE, "note": _TEXT}
PROBE_SCHEMA = {"map": ("str", REQUIRED, None, None), "fields": ("list", None, None, None),
                "slave": ("int", None, lambda v: 1 <= v <= 247, "1..247"), "function": ("int", None, (3, 4), None)}


def _check_node(node, where, schema):
    if not isinstance(node, dict):
        raise ConfigError("%s: must be an object" % where)
    for key in node:
        if key not in schema:
            raise ConfigError("%s.%s: unknown field; known: %s" % (where, key, ", ".join(sorted(schema))))
    for key in schema:
        kind, default, check, allowed = schema[key]
        value = node.get(key)
        if value is None:
            if default is REQUIRED:
                raise ConfigError("%s.%s: required field is missing" % (where, key))
            if default is not None:
                node[key] = default
            continue
        _check_value(where + "." + key, value, kind, check, allowed)
    return node


def check_map(m, where="map"):
    """A flat map checked against MAP_SCHEMA and filled in: each field with its function,
    word order (None: the device's) and probe, "slaves" one id a probe, "writable" a
    list. Raises ConfigError naming the field (map.fields[2].type: ...)."""
    if isinstance(m, dict) and "probes" in m:
        raise ConfigError("%s.probes: a map of probes names shipped maps, in a map file, not here" % where)
    m = _check_node(dict(m) if isinstance(m, dict) else m, where, MAP_SCHEMA)
    fields = []
    probes = 0
    for i in range(len(m["fields"])):
        f = m["fields"][i]
        if isinstance(f, list) and len(f) == len(reads.ROW):   # a row, as a board's config has it
            f = {k: v for k, v in zip(reads.ROW, f) if v is not None}
        f = _check_node(dict(f) if isinstance(f, dict) else f, "%s.fields[%d]" % (where, i), FIELD_SCHEMA)
        f["function"] = f.get("function") or m["function"]
        f["word_order"] = f.get("word_order") or m.get("word_order")
        probes = max(probes, f["probe"] + 1)
        fields.append(f)
    m["fields"] = fields
    slaves = m.get("slaves") or [m["slave"]]
    if len(slaves) < probes:
        raise ConfigError("%s.slaves: %d slave ids for %d probes" % (where, len(slaves), probes))
    m["slaves"] = slaves
    writable = m.get("writable") or []
    for i in range(len(writable)):
        w = _check_node(dict(writable[i]) if isinstance(writable[i], dict) else writable[i],
                        "%s.writable[%d]" % (where, i), WRITABLE_SCHEMA)
        if w["address"] + w["count"] > 0x10000:
            raise ConfigError("%s.writable[%d]: ends beyond register 65535" % (where, i))
        writable[i] = w
    m["writable"] = writable
    return m


NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_+"


def _maps_dir():
    # edge/maps beside this module
    return __file__.rpartition("/")[0] + "/maps"


def read_map(name, where="map"):
    """A shipped map (edge/maps/NAME.json), checked; a map of probes (each a shipped map's
    name, the fields taken from it, its slave id) comes back as one flat map."""
    if not (isinstance(name, str) and 0 < len(name) <= 64 and all([c in NAME_CHARS for c in name])):
        raise ConfigError("%s: %r is not a map name (letters, digits, - _ +)" % (where, name))
    try:
        with open("%s/%s.json" % (_maps_dir(), name)) as f:
            m = json.loads(f.read())
    except (OSError, ValueError) as e:
        raise ConfigError("%s: cannot read the shipped map %r (%s); on a board, edgectl provision puts the map in"
                          " the config" % (where, name, e))
    if not (isinstance(m, dict) and "probes" in m):
        return check_map(m, where)
    probes = _check_node(m, where, {"model": _TEXT, "note": _TEXT, "probes": ("list", REQUIRED, None, None)})["probes"]
    flat = {"model": m.get("model"), "fields": [], "slaves": [], "writable": []}
    for i in range(len(probes)):
        at = "%s.probes[%d]" % (where, i)
        p = _check_node(probes[i], at, PROBE_SCHEMA)
        sub = read_map(p["map"], at + ".map")
        keep = p.get("fields")
        names = [f["name"] for f in sub["fields"]]
        for name in keep or ():
            if name not in names:
                raise ConfigError("%s.fields: %r is not a field of %s" % (at, name, p["map"]))
        if len(sub["slaves"]) > 1:
            raise ConfigError("%s.map: %s is itself a map of probes" % (at, p["map"]))
        for f in sub["fields"]:
            if keep is None or f["name"] in keep:
                f["probe"] = i
                f["function"] = p.get("function") or f["function"]
                flat["fields"].append(f)
        for w in sub["writable"]:
            w["probe"] = i
            flat["writable"].append(w)
        flat["slaves"].append(p.get("slave") or sub["slave"])
    return check_map(flat, where)


def profile_map(profile, m, where="map"):
    """The map a profile's agent decodes with: m (a shipped map's name, a map, or None for
    the profile's own, edge/maps/PROFILE.json), checked, which must give every field the
    profile needs (its telemetry fields but its OPTIONAL ones)."""
    m = read_map(profile if m is None else m, where) if m is None or isinstance(m, str) else check_map(m, where)
    from edge.codes import CODES
    prof = getattr(__import__("edge.profiles." + profile).profiles, profile)
    names = [f["name"] for f in m["fields"]]
    missing = [f[0] for f in CODES[prof.TELEMETRY][2] if f[0] not in names and f[0] not in prof.OPTIONAL]
    if missing:
        raise ConfigError("%s: the %s profile needs %s, which this map does not give" % (
            where, profile, ", ".join(missing)))
    return m


def writable(m, ids):
    """(slave, first, end) of each register range the map lets a master write (its
    "writable", none by default): what edge.bus.Master lets out."""
    out = []
    for w in m.get("writable") or ():
        out.append((ids[w["probe"]], w["address"], w["address"] + w["count"]))
    return tuple(out)
