"""edgectl bench: what one agent costs and what it sends, measured on the real runtime.

- pipeline cost per sample (µs) and live heap, per profile, under the MicroPython unix
  port with the agent compiled to .mpy and the heap capped as on a board (96 KiB);
- bytes per event on the wire, binary against the same content as JSON;
- QoS 1 publish rate of one agent's MQTT link to a private mosquitto.

Figures are medians of several runs: this machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import tempfile

from edge import codec
from edge.codes import CODES, RAISE, REPORT, code_of
from tools import runtime, scenarios
from tools.mosquitto import Mosquitto


def _plain_trace(path: str, header: dict, rows) -> str:
    # plain JSON Lines: a gzip window alone would take 32 KiB of the 96 KiB heap
    with open(path, "w") as fh:
        fh.write(json.dumps(header) + "\n")
        for t, r in rows:
            fh.write(json.dumps({"t": t, "r": r}) + "\n")
    return path


def bench_pipeline(mpy_dir: str, work: str, heap: str, runs: int, corpus: str | None) -> list[dict]:
    traces = {
        "elevator": _plain_trace(os.path.join(work, "elevator.jsonl"), *scenarios.elevator(6 * 3600, 4 * 3600)),
        "water_meter": _plain_trace(os.path.join(work, "water.jsonl"), *scenarios.water_meter(7 * 86400, 5 * 86400)),
    }
    if corpus:
        for profile in traces:
            folder = os.path.join(corpus, profile)
            first = sorted(f for f in os.listdir(folder) if f.endswith(".jsonl.gz"))[0]
            plain = os.path.join(work, profile + "-corpus.jsonl")
            with gzip.open(os.path.join(folder, first), "rb") as src, open(plain, "wb") as dst:
                dst.write(src.read())
            traces[profile] = plain
    env = dict(os.environ, MICROPYPATH=".frozen:" + mpy_dir)
    results = []
    for profile, trace in traces.items():
        samples = []
        fits = heap
        for _ in range(runs):
            while True:
                # cwd outside the repo: MicroPython searches '' first and would compile the
                # .py sources in RAM instead of loading the .mpy
                proc = subprocess.run([runtime.micropython(), "-X", "heapsize=" + fits, "-m", "tools.mp_bench", profile, trace],
                                      env=env, capture_output=True, text=True, cwd=work)
                if proc.returncode == 0 or "MemoryError" not in proc.stderr or int(fits[:-1]) >= 512:
                    break
                # does not fit: find the smallest cap that does, in 16 KiB steps, and say so
                fits = "%dk" % (int(fits[:-1]) + 16)
            if proc.returncode != 0:
                raise RuntimeError("the %s pipeline failed under a %s heap:\n%s" % (profile, fits, proc.stderr or proc.stdout))
            samples.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        best = dict(samples[0], heap_cap=fits, fits_requested=fits == heap)
        best["us_per_sample"] = statistics.median(s["us_per_sample"] for s in samples)
        best["heap_live_peak"] = max(s["heap_live_peak"] for s in samples)
        results.append(best)
    return results


def wire_sizes() -> list[tuple[str, int, int]]:
    signer = codec.Signer(b"\x00" * 16)
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
            proc = subprocess.run([runtime.micropython(), "-m", "tools.mp_publish", "127.0.0.1", str(broker.port), str(count)],
                                  env=env, capture_output=True, text=True, timeout=120, cwd=work)
            if proc.returncode != 0:
                raise RuntimeError("publish probe failed:\n" + (proc.stderr or proc.stdout))
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rates.append(r["count"] / max(r["ms"], 1) * 1000)
    return {"count": count, "runs": runs, "median_per_s": statistics.median(rates), "min_per_s": min(rates)}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--heap", default="96k", help="MicroPython heap cap for the pipeline runs (default 96k)")
    ap.add_argument("--runs", type=int, default=3, help="repetitions; medians are printed (default 3)")
    ap.add_argument("--publish-count", type=int, default=2000, help="QoS 1 publishes per run (default 2000)")
    ap.add_argument("--corpus", metavar="DIR", help="bench on the first trace of each profile in a corpus instead")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="edgectl-bench-") as work:
        mpy = runtime.compile_agent(os.path.join(work, "mpy"), extra=("tools/mp_bench.py", "tools/mp_publish.py", "tools/__init__.py"))
        pipeline = bench_pipeline(mpy, work, args.heap, args.runs, args.corpus)
        wire = wire_sizes()
        publish = bench_publish(mpy, work, args.publish_count, args.runs)
    if args.json:
        print(json.dumps({"pipeline": pipeline, "wire": wire, "publish": publish}, indent=1))
        return 0
    print("pipeline under MicroPython (.mpy, heap %s), median of %d runs" % (args.heap, args.runs))
    print("  %-12s %8s %8s %10s %12s %14s  %s" % ("profile", "samples", "events", "us/sample", "heap peak B",
                                                 "after import B", "runs within"))
    for p in pipeline:
        print("  %-12s %8d %8d %10.1f %12d %14d  %s%s" % (
            p["profile"], p["samples"], p["events"], p["us_per_sample"], p["heap_live_peak"], p["heap_after_import"],
            p["heap_cap"], "" if p["fits_requested"] else "  (does NOT fit in %s)" % args.heap))
    print("bytes per event (binary vs the same content as compact JSON)")
    for name, b, j in wire:
        print("  %-30s %4d B  vs %4d B JSON  (%.1fx smaller)" % (name, b, j, j / b))
    print("QoS 1 publish rate of one agent to mosquitto: median %.0f/s (min %.0f/s) over %d runs of %d"
          % (publish["median_per_s"], publish["min_per_s"], publish["runs"], publish["count"]))
    return 0
