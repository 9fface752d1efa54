#!/usr/bin/env python3
"""Benchmark the generator side by side in one run: the engine alone per precision, the
llama.cpp anchor, the quality gate, streaming through HTTP and the gateway, cold start,
concurrency, and the gateway's capacity for concurrent streams. Prints Markdown tables;
writes bench.json, bench.md and bench.png.

Usage: `make bench` (BENCH_ARGS="--quick", "--only engine --only anchor", ...), or
`.venv/bin/python scripts/bench.py --help`. Timings depend on the machine and its load:
they are figures to compare side by side, never pass/fail limits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from benchkit import anchor
from benchkit.servers import ROOT
from benchkit.variants import precision_of
from benchkit.workload import Workload

SECTIONS = ("engine", "anchor", "quality", "serving", "coldstart", "concurrency", "capacity")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only these")
    parser.add_argument("--quick", action="store_true", help="3 runs, 32 tokens, 1 and 4 streams")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument(
        "--dtypes",
        default="lowbit,lowbit/transformers,bfloat16,float32,float16",
        help="engine precisions: dtypes, and lowbit (4-bit layers, int8 head); a "
        "/transformers suffix runs one through transformers' modeling code",
    )
    parser.add_argument("--streams", default="1,4,8", help="concurrency levels")
    parser.add_argument(
        "--capacity-streams", type=int, default=1000, help="SSE streams held open at once"
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="TORCH_THREADS for every measured engine and server (0: torch's default)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / ".run" / "bench", help="output folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.max_new_tokens, args.streams = 3, 32, "1,4"
    if args.runs < 3:
        parser.error("--runs must be at least 3 (medians with their spread)")
    return args


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{cpu}, {os.cpu_count()} cores"


def meta(args: argparse.Namespace, work: Workload) -> dict[str, Any]:
    import torch
    import transformers

    from generator.settings import Settings
    from generator.weights.loaded import served_precision

    quiet: Any = transformers.utils.logging.disable_progress_bar  # untyped upstream
    quiet()  # keep the output to the tables
    settings = Settings()
    tokenizer = transformers.AutoTokenizer.from_pretrained(settings.model)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "load_average": os.getloadavg()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "model": settings.model,
        "default_dtype": served_precision(settings),
        "prompt": work.prompt,
        "prompt_tokens": len(tokenizer(work.prompt)["input_ids"]),
        "max_new_tokens": work.max_new_tokens,
        "runs": work.runs,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Workload(max_new_tokens=args.max_new_tokens, runs=args.runs)
    sections = args.only or list(SECTIONS)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    env = {"LOG_LEVEL": "warning"}
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)  # the engine alone, in this process
        env["TORCH_THREADS"] = str(args.torch_threads)  # and every process it starts
    has_anchor = anchor.available()
    results: dict[str, Any] = {"meta": meta(args, work)}

    def step(name: str) -> bool:
        if name not in sections:
            return False
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        return True

    if step("engine"):
        from benchkit.engine import measure_engine

        results["engine"] = {dtype: measure_engine(dtype, work) for dtype in dtypes}
    if step("anchor"):
        if has_anchor:
            results["anchor"] = anchor.measure_anchor(work)
        else:
            print("[bench] llama-cpp-python not installed: `make bench-anchor`", file=sys.stderr)
    if step("quality"):
        from benchkit.quality import measure_quality

        results["quality"] = measure_quality(
            [d for d in dtypes if d != "float32" and d == precision_of(d)]
        )
    if step("serving"):
        from benchkit.serving import measure_serving

        results["serving"] = measure_serving(work, env)
    if step("coldstart"):
        from benchkit.coldstart import measure_cold_start

        gguf = anchor.gguf_path() if has_anchor else None
        results["cold_start"] = measure_cold_start(work, env, dtypes, gguf)
    if step("concurrency"):
        from benchkit.concurrency import measure_concurrency

        levels = [int(n) for n in args.streams.split(",")]
        results["concurrency"] = measure_concurrency(work, env, levels, max(3, args.runs // 2))
    if step("capacity"):
        from benchkit.capacity import CapacityLoad, measure_capacity

        load = CapacityLoad(streams=args.capacity_streams)
        results["capacity"] = measure_capacity(env, load, rounds=3)
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = run(args)
    from benchkit import report

    args.out.mkdir(parents=True, exist_ok=True)
    text = report.markdown(results)
    (args.out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "bench.md").write_text(text)
    report.plot(results, args.out / "bench.png")
    print(text)
    print(f"[bench] wrote {args.out}/bench.json, bench.md, bench.png", file=sys.stderr)


if __name__ == "__main__":
    main()
