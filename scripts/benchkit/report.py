"""The benchmark's results as Markdown tables (printed, and saved next to the JSON) and
as one PNG figure. Every input is the JSON-ready dict `bench.py` collects."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _spread(value: dict[str, float], digits: int = 1) -> str:
    return f"{value['median']:.{digits}f} [{value['min']:.{digits}f}–{value['max']:.{digits}f}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _cold(results: dict[str, Any], path: str) -> tuple[str, str]:
    cold = results.get("cold_start", {}).get(path)
    if not cold:
        return "–", "–"
    return _spread(cold["first_token_s"], 2), f"{cold['peak_rss_mb']['median']:.0f}"


def engines_table(results: dict[str, Any]) -> str:
    anchor = results.get("anchor")
    anchor_rate = anchor["tok_s"]["median"] if anchor else None
    quality = results.get("quality", {})
    rows = []
    if anchor:
        cold, rss = _cold(results, "llama.cpp")
        rows.append(
            [
                f"{anchor['engine']} ({anchor['weights']}, {anchor['threads']} threads)",
                _spread(anchor["tok_s"]),
                "1.00",
                _spread(anchor["ttft_ms"]),
                cold,
                rss,
                "–",
            ]
        )
    for dtype, engine in results.get("engine", {}).items():
        cold, rss = _cold(results, f"engine {dtype}")
        ratio = f"{engine['tok_s']['median'] / anchor_rate:.2f}" if anchor_rate else "–"
        gate = quality.get(dtype)
        if dtype == "float32" and quality:
            verdict = "reference"
        elif gate:
            verdict = (
                f"{gate['perplexity_ratio']:.3f}× ppl, {gate['top1_agreement'] * 100:.1f} % top-1"
                f" ({'pass' if gate['passes'] else 'FAIL'})"
            )
        else:
            verdict = "–"
        rows.append(
            [
                f"this engine, {dtype}",
                _spread(engine["tok_s"]),
                ratio,
                _spread(engine["ttft_ms"]),
                cold,
                rss,
                verdict,
            ]
        )
    header = [
        "engine / precision",
        "decode tok/s",
        "× llama.cpp",
        "TTFT ms",
        "new process → first token s",
        "peak RSS MB",
        "quality vs float32",
    ]
    return _table(header, rows)


def streaming_table(results: dict[str, Any]) -> str:
    serving = results["serving"]
    default = results["meta"]["default_dtype"]
    engine = results.get("engine", {}).get(default)
    base = engine["tok_s"]["median"] if engine else None
    latency = serving["added_latency_ms"]
    rows = []
    if engine:
        first, rss = _cold(results, f"engine {default}")
        label = f"engine alone ({default})"
        rows.append([label, _spread(engine["tok_s"]), "1.00", _spread(engine["ttft_ms"]), "–"])
        rows[-1] += [first, rss]
    for side, label, cold in (
        ("generator", "generator HTTP (NDJSON)", "generator"),
        ("gateway", "gateway SSE", "gateway+generator"),
    ):
        rate = serving[side]["tok_s"]
        ratio = f"{rate['median'] / base:.3f}" if base else "–"
        added = f"{latency['p50']:.2f} / {latency['p99']:.2f}" if side == "gateway" else "–"
        first, rss = _cold(results, cold)
        rows.append([label, _spread(rate), ratio, _spread(serving[side]["ttft_ms"]), added, first])
        rows[-1].append(rss)
    header = [
        "path (client side)",
        "tok/s",
        "× engine alone",
        "TTFT ms",
        "added ms/token p50 / p99",
        "new process → first token s",
        "peak RSS MB",
    ]
    return _table(header, rows)


def concurrency_table(results: dict[str, Any]) -> str:
    levels = results["concurrency"]["levels"]
    single = levels.get("1", {}).get("aggregate_tok_s", {}).get("median")
    rows = []
    for streams, level in levels.items():
        aggregate = level["aggregate_tok_s"]
        stream = level["stream_tok_s"]
        rows.append(
            [
                streams,
                _spread(aggregate),
                f"{aggregate['median'] / single:.2f}" if single else "–",
                f"{level['ttft_ms_p50']:.0f} / {level['ttft_ms_p95']:.0f}",
                f"{stream['min']:.1f}–{stream['max']:.1f}",
                f"{stream['max'] / stream['min']:.2f}" if stream["min"] else "–",
            ]
        )
    header = [
        "streams",
        "aggregate tok/s",
        "× 1 stream",
        "TTFT ms p50 / p95",
        "per-stream tok/s min–max",
        "max/min",
    ]
    return _table(header, rows)


def capacity_table(results: dict[str, Any]) -> str:
    capacity = results["capacity"]
    load = capacity["load"]
    errors = capacity["errors_total"]
    peak_client, peak_gateway = capacity["peak_open_client"], capacity["peak_active_gateway"]
    rss, idle = capacity["peak_rss_mb"], capacity["idle_rss_mb"]
    row = [
        str(load["streams"]),
        _spread(capacity["ok"], 0),
        ", ".join(f"{kind}: {n}" for kind, n in sorted(errors.items())) or "0",
        f"{peak_client['min']:.0f} / {peak_gateway['min']:.0f}",
        "yes" if capacity["all_streaming_together"] else "no",
        f"{_spread(rss, 0)} (idle {idle['median']:.0f})",
        f"{capacity['ttft_ms_p50']['median']:.0f} / {capacity['ttft_ms_p95']['median']:.0f}",
        _spread(capacity["events_per_s"], 0),
        f"{capacity['gateway_cpu_us_per_event']['median']:.0f}",
    ]
    header = [
        "streams opened at once",
        "ended with done",
        "errors (all rounds)",
        "peak open: client / gateway (lowest round)",
        "all streaming at once",
        "gateway peak RSS MB",
        "TTFT ms p50 / p95",
        "token events/s",
        "gateway CPU µs/event",
    ]
    note = (
        f"{len(capacity['rounds'])} rounds, each on a fresh gateway; every stream "
        f"{load['tokens']} tokens, one every {load['token_interval_s']:g} s, from "
        f"{load['upstream']}; open files limit {load['open_files_limit']}."
    )
    return _table(header, [row]) + "\n\n" + note


def _median(results: dict[str, Any], *path: str) -> float | None:
    value: Any = results
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value["median"]) if isinstance(value, dict) else float(value)


def _ratio(numerator: float | None, denominator: float | None, digits: int = 2) -> str:
    if numerator is None or not denominator:
        return "–"
    return f"{numerator / denominator:.{digits}f}×"


def targets_table(results: dict[str, Any]) -> str:
    """The runtime's targets, each as this run measured it (ratios: side by side)."""
    default = results["meta"]["default_dtype"]
    engine_rate = _median(results, "engine", default, "tok_s")
    anchor_rate = _median(results, "anchor", "tok_s")
    torch_s = _median(results, "cold_start", "import torch", "first_token_s")
    engine_s = _median(results, "cold_start", f"engine {default}", "first_token_s")
    generator_s = _median(results, "cold_start", "generator", "first_token_s")
    serving_rss = [
        _median(results, "cold_start", "generator", "peak_rss_mb"),
        _median(results, "concurrency", "generator_peak_rss_mb"),
    ]
    levels = results.get("concurrency", {}).get("levels", {})
    single = _median(levels, "1", "aggregate_tok_s")
    eight = _median(levels, "8", "aggregate_tok_s")
    gateway_rate = _median(results, "serving", "gateway", "tok_s")
    known_rss = [r for r in serving_rss if r is not None]
    rows = [
        ["decode tok/s, 1 stream ÷ llama.cpp", "≥ 1.0×", _ratio(engine_rate, anchor_rate)],
        ["new process → first token, bare engine ÷ import torch", "≤ 1.5×",
         _ratio(engine_s, torch_s)],
        ["new process → first token, generator HTTP ÷ import torch", "≤ 1.8×",
         _ratio(generator_s, torch_s)],
        ["peak RSS serving the default (generator process)", "≤ 400 MB",
         f"{max(known_rss):.0f} MB" if known_rss else "–"],
        ["8 streams ÷ 1 stream, aggregate tok/s", "≥ 4×", _ratio(eight, single)],
        ["gateway SSE ÷ engine alone, tok/s", "≥ 0.97×", _ratio(gateway_rate, engine_rate, 3)],
    ]  # fmt: skip
    return _table(["figure", "target", "this run"], rows)


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    parts = [
        f"{meta['machine']}; torch {meta['torch']}, transformers {meta['transformers']}; "
        f"prompt {meta['prompt_tokens']} tokens, {meta['max_new_tokens']} new tokens, greedy, "
        f"batch 1; medians of {meta['runs']} runs [min–max]; the default configuration "
        f"serves {meta['default_dtype']} (`lowbit`: 4-bit layers as the GGUF stores them, "
        "int8 output head, bfloat16 activations).",
    ]
    parts.append(targets_table(results))
    if results.get("engine") or results.get("anchor"):
        parts.append(engines_table(results))
    torch_cold = results.get("cold_start", {}).get("import torch")
    if torch_cold:
        parts.append(
            f"`import torch` alone, in a new process: {_spread(torch_cold['first_token_s'], 2)} s,"
            f" peak RSS {torch_cold['peak_rss_mb']['median']:.0f} MB."
        )
    if results.get("serving"):
        parts.append(streaming_table(results))
    if results.get("concurrency"):
        rss = results["concurrency"]["generator_peak_rss_mb"]
        parts.append(concurrency_table(results) + f"\n\nGenerator peak RSS after it: {rss:.0f} MB.")
    if results.get("capacity"):
        parts.append(capacity_table(results))
    return "\n\n".join(parts) + "\n"


def plot(results: dict[str, Any], target: Path) -> None:
    """Four panels: decode speed per engine, streaming paths, cold start, concurrency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(12, 8))
    _bars(axes[0][0], _engine_bars(results), "decode tok/s (batch 1)")
    serving = results.get("serving")
    if serving:
        bars = [
            (f"engine {results['meta']['default_dtype']}", results["engine"][d]["tok_s"])
            for d in [results["meta"]["default_dtype"]]
            if d in results.get("engine", {})
        ]
        bars += [
            ("generator HTTP", serving["generator"]["tok_s"]),
            ("gateway SSE", serving["gateway"]["tok_s"]),
        ]
        _bars(axes[0][1], bars, "client tok/s, one stream")
    cold = results.get("cold_start", {})
    _bars(
        axes[1][0],
        [(k, v["first_token_s"]) for k, v in cold.items()],
        "new process → first token (s)",
    )
    concurrency = results.get("concurrency")
    if concurrency:
        ax = axes[1][1]
        levels = concurrency["levels"]
        xs = [int(n) for n in levels]
        ax.plot(
            xs, [v["aggregate_tok_s"]["median"] for v in levels.values()], "o-", label="aggregate"
        )
        ax.fill_between(
            xs,
            [v["stream_tok_s"]["min"] for v in levels.values()],
            [v["stream_tok_s"]["max"] for v in levels.values()],
            alpha=0.3,
            label="per stream (min–max)",
        )
        ax.set_xticks(xs)
        ax.set_xlabel("concurrent streams")
        ax.set_title("tok/s under concurrency")
        ax.legend()
    for ax in axes.flat:
        if not ax.has_data():
            ax.set_axis_off()
    meta = results["meta"]
    figure.suptitle(
        f"SmolLM2-135M, {meta['prompt_tokens']}-token prompt, "
        f"{meta['max_new_tokens']} new tokens, greedy — {meta['machine']}"
    )
    figure.tight_layout()
    figure.savefig(target, dpi=110)
    plt.close(figure)


def _engine_bars(results: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    bars = []
    if results.get("anchor"):
        bars.append((f"llama.cpp {results['anchor']['weights']}", results["anchor"]["tok_s"]))
    bars += [(dtype, engine["tok_s"]) for dtype, engine in results.get("engine", {}).items()]
    return bars


def _bars(ax: Any, bars: list[tuple[str, dict[str, float]]], title: str) -> None:
    if not bars:
        return
    labels = [label for label, _ in bars]
    medians = [v["median"] for _, v in bars]
    errors = [[v["median"] - v["min"] for _, v in bars], [v["max"] - v["median"] for _, v in bars]]
    ax.bar(labels, medians, yerr=errors, capsize=4, color="#4c72b0")
    for i, value in enumerate(medians):
        ax.annotate(f"{value:.3g}", (i, value / 2), ha="center", color="white", weight="bold")
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=15)
