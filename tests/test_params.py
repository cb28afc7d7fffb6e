"""Every threshold and time constant is in one PARAMS table per detector, with a default
and a one-line reason. The reason is a comment on the entry's line, so a board does not
carry it in RAM; this test reads it from the source, and checks that the docs list every
parameter with the default the code has (the tables in the docs are the ones
`parameter_table()` prints)."""
from __future__ import annotations

import os
import re

import pytest

from edge.detect import common, elevator, noise, structure, water_meter, water_quality

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY = re.compile(r'^\s+"(\w+)": ([^,#]+),\s*#\s*(\S.*)$')

MODULES = [(common, "docs/detectors-water.md"), (water_meter, "docs/detectors-water.md"),
           (elevator, "docs/filters.md"), (water_quality, "docs/water-quality.md"),
           (noise, "docs/noise.md"), (structure, "docs/structure.md")]


def params_from_source(module) -> list[tuple[str, str, str]]:
    """(name, default as written, reason) of each PARAMS line, in source order."""
    text = open(module.__file__).read()
    block = text[text.index("PARAMS = {"):]
    block = block[:block.index("\n}\n")]
    return [m.groups() for m in map(ENTRY.match, block.splitlines()[1:]) if m]


def parameter_table(module) -> str:
    """The Markdown table of a detector's parameters, from its source."""
    rows = ["| name | default | why |", "|---|---|---|"]
    rows += ["| `%s` | %s | %s |" % entry for entry in params_from_source(module)]
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("module,doc", MODULES, ids=lambda m: getattr(m, "__name__", m))
def test_every_parameter_has_a_default_and_a_reason_on_its_line(module, doc):
    entries = params_from_source(module)
    assert [e[0] for e in entries] == list(module.PARAMS), "a PARAMS line without a '# reason' comment"
    for name, default, reason in entries:
        assert float(default) == module.PARAMS[name], name
        assert len(reason) >= 12, "%s: the reason is too short to say why" % name


@pytest.mark.parametrize("module,doc", MODULES, ids=lambda m: getattr(m, "__name__", m))
def test_the_docs_name_every_parameter_with_its_default(module, doc):
    text = open(os.path.join(ROOT, doc)).read()
    for name, default, _ in params_from_source(module):
        assert "`%s`" % name in text, "%s does not mention %s" % (doc, name)
        row = [line for line in text.splitlines() if line.startswith("| `%s`" % name)
               or line.startswith("| ") and "`%s`" % name in line.split("|")[1]]
        if row:
            cells = row[0].split("|")
            names = re.findall(r"`(\w+)`", cells[1])
            numbers = re.findall(r"-?\d+(?:\.\d+)?", cells[2])
            if len(names) == len(numbers):
                shown = float(numbers[names.index(name)])
                assert shown == float(default), "%s: the docs say %s, the code %s" % (name, shown, default)


def test_the_water_doc_table_is_the_generated_one():
    text = open(os.path.join(ROOT, "docs/detectors-water.md")).read()
    for module in (water_meter, common):
        table = parameter_table(module)
        assert table in text, "docs/detectors-water.md: paste this table:\n" + table
