"""edgectl bench: what one agent costs and what it sends, measured on the real runtime.

- pipeline cost per sample (µs) and live heap, per profile, under the MicroPython unix
  port with the agent compiled to .mpy and the heap capped as on a board (96 KiB);
- bytes per event on the wire, binary against the same content as JSON;
- QoS 1 publish rate of one agent's MQTT link to a private mosquitto.

Figures are medians of several runs: this machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile

from edge import codec
from edge.mapcheck import profile_map
from edge.reads import reads
from tools.common import devconfig
from tools.testbench import slave
from edge.codes import RAISE, REPORT, code_of
from tools.testbench.mp_replay import Trace, parse_iso
from tools.common import runtime
from tools.testbench import scenarios
from tools.common.mosquitto import Mosquitto


def _words_trace(path: str, header: dict, rows) -> str:
    """The trace as mp_bench reads it: register words already encoded (the simulator's
    job, so its code is not loaded on the measured heap), plain text (a gzip window alone
    would take 32 KiB of the 96 KiB heap)."""
    profile = header["profile"]
    # what edge.boot makes of the profile's map (edge/reads.py), and the words of its
    # reads one after the other, in the order the agent makes them
    board = devconfig.board_map(profile_map(profile, None))
    blocks = reads({"profile": profile, "bus": {}, "map": board})[0]
    start, offset = parse_iso(header["start"])
    site = dict(header.get("config") or {}, utc_offset_s=offset)
    with open(path, "w") as fh:
        fh.write(json.dumps({"profile": profile, "site": site, "start": start, "map": board}) + "\n")
        for t, r in rows:
            words = "-" if r is None else " ".join(str(w) for b in blocks for w in slave.encode(b[4], r))
            fh.write("%s %s\n" % (t, words))
    return path


def _frames_trace(path: str, header: dict, rows, address: str = "78330011223344") -> str:
    """A water meter's trace as mp_bench reads it for a CJ/T 188 meter: its bus config in
    the header, and per poll the meter's 901F reply, or "-" for silence."""
    from edge import cjt188
    from tools.testbench.cjt188_meter import meter_data, reply
    start, offset = parse_iso(header["start"])
    site = dict(header.get("config") or {}, utc_offset_s=offset)
    bus = {"port": "trace", "protocol": "cjt188", "address": address}
    req = cjt188.read_request(cjt188.COLD_WATER, address)
    with open(path, "w") as fh:
        fh.write(json.dumps({"profile": header["profile"], "site": site, "start": start, "map": None,
                             "bus": bus}) + "\n")
        for t, r in rows:
            silent = r is None or r.get("total") is None
            # the frame as its length and one number: mp_bench reads a line's words as ints,
            # and a list of 41 of them would be the bench's own garbage on the heap it measures
            frame = reply(req, meter_data(r["total"]), address) if not silent else b""
            fh.write("%s %s\n" % (t, "%d %d" % (len(frame), int.from_bytes(frame, "big")) if frame else "-"))
    return path


def _corpus_rows(path: str):
    trace = Trace(path)
    for t, r in trace.rows():
        yield t - trace.start, r


# the bench's row of a water meter on CJ/T 188
CJT188 = "water_meter:cjt188"

# what mp_bench needs beside the agent's own modules
BENCH_MODULES = ("tools/__init__.py", "tools/testbench/__init__.py", "tools/testbench/mp_bench.py",
                 "tools/testbench/mp_meter.py")


def profile_traces(work: str, days: float = 1.0) -> dict[str, str]:
    """A words trace per profile, each with its incidents; days scales them (the test
    of the heap budget runs a short one)."""
    def s(x):
        return int(x * days)
    return {
        "elevator": _words_trace(os.path.join(work, "elevator.words"), *scenarios.elevator(s(6 * 3600), s(4 * 3600))),
        "water_meter": _words_trace(os.path.join(work, "water.words"),
                                    *scenarios.water_meter(s(7 * 86400), s(5 * 86400))),
        # the same meter read over CJ/T 188 (edge/cjt188_bus.py) instead of Modbus
        CJT188: _frames_trace(os.path.join(work, "water.frames"), *scenarios.water_meter(s(7 * 86400), s(5 * 86400))),
        "noise": _words_trace(os.path.join(work, "noise.words"), *scenarios.noise(s(2 * 86400), s(86400 - 2 * 3600))),
        "structure": _words_trace(os.path.join(work, "structure.words"),
                                  *scenarios.structure(s(30 * 86400), s(10 * 86400 + 9 * 3600))),
        "water_quality": _words_trace(os.path.join(work, "wq.words"), *scenarios.water_quality("wqs-004", 4)[:2]),
    }


def run_agent(mpy_dir: str, work: str, profile: str, trace: str, heap_kb: int) -> subprocess.CompletedProcess:
    """mp_bench: the agent of one profile over a words trace, under a heap cap; its
    figures are the last line of stdout (JSON). A MemoryError is an exit status of 1."""
    state = "state-" + profile
    shutil.rmtree(os.path.join(work, state), ignore_errors=True)
    # cwd outside the repo: MicroPython searches '' first and would compile the .py
    # sources in RAM instead of loading the .mpy. Paths relative to it: the agent builds
    # its outbox's file names from the state directory's, and every import a module
    # path from MICROPYPATH's; a board's are a few characters ("/state", "/lib"), not a
    # temporary directory's forty or more (which cost heap, and made the result depend
    # on where pytest put it)
    return subprocess.run([runtime.micropython(), "-X", "heapsize=%dk" % heap_kb, "-m", "tools.testbench.mp_bench",
                           profile, os.path.relpath(trace, work), state],
                          env=dict(os.environ, MICROPYPATH=".frozen:" + os.path.relpath(mpy_dir, work)),
                          capture_output=True, text=True, cwd=work)


def bench_pipeline(mpy_dir: str, work: str, heap: str, runs: int, corpus: str | None) -> list[dict]:
    traces = profile_traces(work)
    if corpus:
        for profile in traces:
            folder = os.path.join(corpus, profile.split(":")[0])
            first = os.path.join(folder, sorted(f for f in os.listdir(folder) if f.endswith(".jsonl.gz"))[0])
            header = Trace(first).header
            write = _frames_trace if profile == CJT188 else _words_trace
            traces[profile] = write(os.path.join(work, profile + "-corpus.words"), header, _corpus_rows(first))
    results = []
    for profile, trace in traces.items():
        def attempt(heap_kb: int) -> subprocess.CompletedProcess:
            proc = run_agent(mpy_dir, work, profile, trace, heap_kb)
            if proc.returncode != 0 and "MemoryError" not in proc.stderr:
                raise RuntimeError("the %s agent failed under a %d KiB heap:\n%s" % (
                    profile, heap_kb, proc.stderr or proc.stdout))
            return proc

        smallest = _smallest_heap(lambda k: attempt(k).returncode == 0, int(heap[:-1]))
        if smallest is None:
            raise RuntimeError("the %s agent does not run even in a 512 KiB heap" % profile)
        cap = max(smallest, int(heap[:-1]))
        samples = [json.loads(attempt(cap).stdout.strip().splitlines()[-1]) for _ in range(runs)]
        best = dict(samples[0], heap_cap="%dk" % smallest, fits_requested=smallest <= int(heap[:-1]))
        best["us_per_sample"] = statistics.median(s["us_per_sample"] for s in samples)
        best["us_per_stored_event"] = statistics.median(s["us_per_stored_event"] for s in samples)
        best["heap_live_peak"] = max(s["heap_live_peak"] for s in samples)
        results.append(best)
    return results


def _smallest_heap(runs_in, start_kb: int, step_kb: int = 2) -> int | None:
    """The smallest heap cap (KiB, in steps) that runs_in accepts: down from start_kb
    while it still runs, up from it if it does not."""
    if runs_in(start_kb):
        k = start_kb
        while k - step_kb >= 16 and runs_in(k - step_kb):
            k -= step_kb
        return k
    k = start_kb
    while k < 512:
        k += step_kb
        if runs_in(k):
            return k
    return None


def wire_sizes() -> list[tuple[str, int, int]]:
    signer = codec.Signer(b"\x00" * 16, "bench-1")
    cases = [
        ("alarm elevator.entrapment", code_of("elevator.entrapment"), RAISE, [7, 61]),
        ("telemetry elevator", code_of("telemetry.elevator"), REPORT, [0, -1, 1.62, 7, 0, 0, 1, 0]),
        ("telemetry water_meter", code_of("telemetry.water_meter"), REPORT, [147.969, 0.545, 3.56]),
        ("alarm water.continuous_flow", code_of("water.continuous_flow"), RAISE, [3600, 0.9]),
    ]
    out = []
    for name, code, action, values in cases:
        b = codec.encode(signer, code, action, 3, 1234, 1780000000, values)
        ev = codec.decode(b)
        as_json = json.dumps({k: ev[k] for k in ("type", "action", "boot", "seq", "t", "clock_set", "values")}
                             | {"mac": b[-8:].hex()}, separators=(",", ":"))
        out.append((name, len(b), len(as_json)))
    return out


def bench_publish(mpy_dir: str, work: str, count: int, runs: int) -> dict:
    env = dict(os.environ, MICROPYPATH=".frozen:" + mpy_dir)
    rates = []
    with Mosquitto(os.path.join(work, "mosquitto")) as broker:
        for _ in range(runs):
            proc = subprocess.run([runtime.micropython(), "-m", "tools.testbench.mp_publish", "127.0.0.1",
                                   str(broker.port), str(count)],
                                  env=env, capture_output=True, text=True, timeout=120, cwd=work)
            if proc.returncode != 0:
                raise RuntimeError("publish probe failed:\n" + (proc.stderr or proc.stdout))
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rates.append(r["count"] / max(r["ms"], 1) * 1000)
    return {"count": count, "runs": runs, "median_per_s": statistics.median(rates), "min_per_s": min(rates)}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--heap", default=runtime.AGENT_HEAP,
                    help="MicroPython heap cap for the pipeline runs (default: the budget, %s)" % runtime.AGENT_HEAP)
    ap.add_argument("--runs", type=int, default=3, help="repetitions; medians are printed (default 3)")
    ap.add_argument("--publish-count", type=int, default=2000, help="QoS 1 publishes per run (default 2000)")
    ap.add_argument("--corpus", metavar="DIR", help="bench on the first trace of each profile in a corpus instead")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="edgectl-bench-") as work:
        mpy = runtime.compile_agent(os.path.join(work, "mpy"), extra=BENCH_MODULES + ("tools/testbench/mp_publish.py",))
        pipeline = bench_pipeline(mpy, work, args.heap, args.runs, args.corpus)
        wire = wire_sizes()
        publish = bench_publish(mpy, work, args.publish_count, args.runs)
    if args.json:
        print(json.dumps({"pipeline": pipeline, "wire": wire, "publish": publish}, indent=1))
        return 0
    print("the agent under MicroPython (.mpy, heap %s, flash outbox included), median of %d runs" % (
        args.heap, args.runs))
    print("  %-18s %8s %8s %10s %12s %12s %12s %10s  %s" % (
        "profile", "samples", "events", "us/sample", "us/event", "heap peak B", "at start B", "qstr room",
        "smallest heap"))
    for p in pipeline:
        print("  %-18s %8d %8d %10.1f %12.1f %12d %12d %10d  %s%s" % (
            p["profile"], p["samples"], p["events"], p["us_per_sample"], p["us_per_stored_event"],
            p["heap_live_peak"], p["heap_after_start"], p["qstr_room"], p["heap_cap"],
            "" if p["fits_requested"] else "  (does NOT fit in %s)" % args.heap))
    print("  us/sample: one poll's whole path (decode, detectors, sign, store, send to a broker that acks"
          " at once); us/event: the outbox's share per event (append with fsync)")
    pool = max(p["qstr_pool"] for p in pipeline)
    print("  qstr room: names the agent can still intern before MicroPython allocates its next pool"
          " of them (%s; docs/heap.md)" % ("%d B at once" % pool if pool else "which no longer fits in the heap"))
    print("bytes per event (binary vs the same content as compact JSON)")
    for name, b, j in wire:
        print("  %-30s %4d B  vs %4d B JSON  (%.1fx smaller)" % (name, b, j, j / b))
    print("QoS 1 publish rate of one agent to mosquitto: median %.0f/s (min %.0f/s) over %d runs of %d"
          % (publish["median_per_s"], publish["min_per_s"], publish["runs"], publish["count"]))
    return 0
