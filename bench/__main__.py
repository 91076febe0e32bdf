"""``python -m bench`` (``make bench``): run every benchmark in turn and print its figures."""

from __future__ import annotations

import runpy
import sys

BENCHMARKS = ["bench.bench_mixer", "bench.bench_composite", "bench.bench_capacity", "bench.bench_loop_lag",
              "bench.bench_store_writes", "bench.bench_rtmp", "bench.bench_record", "bench.bench_webrtc",
              "bench.bench_sip_media"]

if __name__ == "__main__":
    # `python -m bench record` runs bench.bench_record (the full module name works too)
    chosen = [name if name.startswith("bench.") else f"bench.{name if name.startswith('bench_') else 'bench_' + name}"
              for name in sys.argv[1:]] or BENCHMARKS
    for name in chosen:
        print(f"\n=== {name} ===", flush=True)
        saved = sys.argv
        sys.argv = [name]
        try:
            runpy.run_module(name, run_name="__main__")
        finally:
            sys.argv = saved
