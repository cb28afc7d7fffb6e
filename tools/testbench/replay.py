"""edgectl replay: run the on-device pipeline over recorded traces.

Each trace runs in its own process under the chosen runtime (the MicroPython unix port
by default), so what is judged is exactly the code a board runs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from tools.common import runtime


def find_traces(paths: list[str]) -> list[str]:
    """Trace files named directly or found under corpus directories."""
    found = []
    for p in paths:
        if os.path.isdir(p):
            for dirpath, _, files in sorted(os.walk(p)):
                found += [os.path.join(dirpath, f) for f in sorted(files) if f.endswith(".jsonl.gz")]
        elif os.path.isfile(p):
            found.append(p)
        else:
            raise FileNotFoundError("no trace or corpus directory at %s" % p)
    return found


def trace_profile(path: str) -> str:
    import gzip
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as fh:
        line = fh.readline()
    try:
        return json.loads(line)["profile"]
    except (ValueError, KeyError) as e:
        raise ValueError("%s: the first line is not a trace header with a profile (%s)" % (path, e)) from None


def out_path(out_dir: str, trace: str) -> str:
    name = os.path.basename(trace)
    for suffix in (".jsonl.gz", ".jsonl"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return os.path.join(out_dir, trace_profile(trace), name + ".events.jsonl")


def replay_one(trace: str, out_dir: str, rt: str, overrides: dict | None = None) -> tuple[str, str]:
    dest = out_path(out_dir, trace)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    args = [os.path.abspath(trace), dest] + ([json.dumps(overrides)] if overrides else [])
    proc = subprocess.run(runtime.command(rt, "tools.testbench.mp_replay", *args), env=runtime.micropython_env(),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("replay of %s under %s failed:\n%s" % (trace, rt, proc.stderr or proc.stdout))
    return trace, dest


def replay_all(paths: list[str], out_dir: str, rt: str = "micropython",
               overrides: dict | None = None, jobs: int | None = None) -> list[tuple[str, str]]:
    traces = find_traces(paths)
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 2) as pool:
        return list(pool.map(lambda t: replay_one(t, out_dir, rt, overrides), traces))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("paths", nargs="+", metavar="CORPUS_DIR_OR_TRACE",
                    help="trace files (.jsonl.gz) or directories holding them")
    ap.add_argument("--out", required=True, metavar="DIR",
                    help="writes DIR/<profile>/<name>.events.jsonl, one alarm state change a line")
    ap.add_argument("--runtime", choices=("micropython", "cpython"), default="micropython",
                    help="run the agent code under the MicroPython unix port (default) or CPython")
    ap.add_argument("--params", metavar="JSON", help='threshold overrides, e.g. \'{"comm_loss_s": 240}\'')
    ap.add_argument("--jobs", type=int, help="traces replayed at once (default: one per core)")


def run(args: argparse.Namespace) -> int:
    overrides = json.loads(args.params) if args.params else None
    try:
        done = replay_all(args.paths, args.out, args.runtime, overrides, args.jobs)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print("edgectl replay: %s" % e, file=sys.stderr)
        return 2
    print("replayed %d traces under %s into %s" % (len(done), args.runtime, args.out))
    return 0
