# The reads a poll makes, from a device's register map (edge/maps, docs/register-maps.md):
# its fields cut into blocks, one read each, and each probe's slave id. On a board,
# edge.boot makes them once the config's checker is gone, and drops this module before
# the agent's pipeline is built.
from edge import regmap
from edge.clock import const

MAX_READ = 125          # registers one read may ask for (Modbus: 1..125)
_MAX_GAP = const(8)            # unmapped registers a read spans rather than split (many devices refuse them)
# a field as a row, as a board's config carries it (tools/common/devconfig.board_map)
ROW = ("name", "address", "type", "scale", "function", "word_order", "probe")


def blocks(fields, order=None, keep=None):
    """The reads a poll makes, from a checked map's fields (edge.mapcheck.check_map): a
    list of (probe, function, first, count, table), one a probe and function, cut where
    a block would pass MAX_READ registers or span more than _MAX_GAP unmapped ones.
    keep: the field names to read (default all); order: the device's word order, over
    the map's (each table row carries its own)."""
    groups = {}
    for f in fields:
        if isinstance(f, list):    # a row
            f = dict(zip(ROW, f))
        if keep is None or f["name"] in keep:
            o = order or f.get("word_order") or regmap.ORDERS[0]
            row = (f["name"], f["address"], f["type"], f.get("scale", 1), o)
            groups.setdefault((f.get("probe", 0), f.get("function", 3)), []).append(row)
    out = []
    for key in sorted(groups):
        rows = sorted(groups[key], key=lambda r: r[1])
        start = end = 0
        for i in range(1, len(rows) + 1):
            end = max(end, rows[i - 1][1] + regmap.WORDS[rows[i - 1][2]])
            if (i == len(rows) or rows[i][1] + regmap.WORDS[rows[i][2]] - rows[start][1] > MAX_READ
                    or rows[i][1] - end > _MAX_GAP):
                table = tuple(rows[start:i])
                first, count = regmap.span(table)
                out.append((key[0], key[1], first, count, table))
                start = i
    return out


def slave_ids(m, bus):
    """The slave id of each of a checked map's probes: the device config's bus.slaves,
    else the map's own when it has several probes, else bus.slave."""
    s = m["slaves"]
    return bus.get("slaves") or (s if len(s) > 1 else (bus.get("slave") or s[0],))


def reads(cfg):
    """What the agent polls: (blocks() of the map's fields its profile has, the probes'
    slave ids, the profile's reading fields: its telemetry's, then its OPTIONAL ones
    telemetry does not carry); a CJ/T 188 meter's is one block and no map. A config
    without a map (tests): the profile's own, from edge/mapcheck.py (not on a board)."""
    from edge.codes import CODES
    prof = getattr(__import__("edge.profiles." + cfg["profile"]).profiles, cfg["profile"])
    fields = []
    for f in CODES[prof.TELEMETRY][2]:
        fields.append(f[0])
    for f in prof.OPTIONAL:     # an optional field telemetry does not carry: for the detector alone
        if f not in fields:
            fields.append(f)
    bus = cfg["bus"]
    if bus.get("protocol") == "cjt188":
        # one exchange gives every field the meter has (edge/cjt188_bus.py): one block
        return ((0, 0, 0, 0, ()),), (0,), fields
    m = cfg.get("map")
    if m is None:
        from edge.mapcheck import profile_map
        m = profile_map(cfg["profile"], None)
    # each name, type and word order the one string the agent holds anyway (the codes'
    # field names, regmap's constants), not a copy from the JSON config
    same = {}
    for s in fields + list(regmap.WORDS) + list(regmap.ORDERS):
        same[s] = s
    out = []
    for probe, fc, first, count, table in blocks(m["fields"], bus.get("word_order"), fields):
        rows = []
        for r in table:
            rows.append((same[r[0]], r[1], same[r[2]], r[3], same[r[4]]))
        out.append((probe, fc, first, count, tuple(rows)))
    return out, slave_ids(m, bus), fields
