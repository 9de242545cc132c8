"""The fused Linear (one sm90 GEMM with the chain in its epilogue) against F.linear alone (cuBLAS GEMM + bias, no
tail: the bar), eager PyTorch (F.linear then one kernel per op) and torch.compile, in bf16.

    python benchmarks/bench_linear.py [--out DIR] [--quick]

Rows: the reference problems of shared/problems (GroupNorm aside), 4096x1024x1024 with gelu, and a sweep of M in
1..16384 with N, K in {1024, 4096, 8192}. Also "fused, empty chain": the same kernel with no ops, to measure
what the chain itself costs. Medians of triton.testing.do_bench over --rounds rotated rounds at the GPU's sustained
clocks (common.py), all columns of a row in the same run, inputs fresh torch.randn scaled like nn.Linear's
initialization. Writes bench_linear.md, .json and .png.
"""

import argparse
import os

import torch
import torch.nn.functional as F

import cutlass_ext
from common import run_meta, timed, write_results

CHAIN_GELU = "mul(0.5) | hardtanh(-2, 2) | gelu"
CHAIN_SWISH = "silu | div(2) | clamp(-1, 1) | tanh | clamp(-1, 1)"
DTYPE = torch.bfloat16


def eager_chain(text):
    """The chain as eager PyTorch runs it, one kernel per op, from the problem files' forward()."""
    if text == CHAIN_GELU:
        return lambda y: F.gelu(F.hardtanh(y * 0.5, -2, 2))
    if text == CHAIN_SWISH:
        return lambda y: torch.clamp(torch.tanh(torch.clamp(y * torch.sigmoid(y) / 2.0, -1, 1)), -1, 1)
    if text == "gelu":
        return F.gelu
    raise ValueError(text)


def measure(name, m, n, k, chain, compiled_cache, rep, rounds):
    x = torch.randn(m, k, device="cuda", dtype=DTYPE)
    w = ((torch.rand(n, k, device="cuda") * 2 - 1) / k ** 0.5).to(DTYPE)
    b = ((torch.rand(n, device="cuda") * 2 - 1) / k ** 0.5).to(DTYPE)
    epi = cutlass_ext.Epilogue(chain)
    empty = cutlass_ext.Epilogue("")
    tail = eager_chain(chain)

    def eager():
        return tail(F.linear(x, w, b))

    if chain not in compiled_cache:
        compiled_cache[chain] = torch.compile(lambda x, w, b: tail(F.linear(x, w, b)), dynamic=True)
    compiled = compiled_cache[chain]
    path = cutlass_ext.linear_path(x, w, b, epi)
    ours, want = cutlass_ext.linear(x, w, b, epi), eager()
    err = (ours.float() - want.float()).abs().max().item()

    fns = {"fused": lambda: cutlass_ext.linear(x, w, b, epi),
           "fused_empty_chain": lambda: cutlass_ext.linear(x, w, b, empty),
           "f_linear": lambda: F.linear(x, w, b), "eager": eager, "compile": lambda: compiled(x, w, b)}
    row = {"name": name, "m": m, "n": n, "k": k, "chain": chain, "path": str(path), "max_abs_diff_vs_eager": err}
    row.update({f"{key}_ms": ms for key, ms in timed(fns, rep, rounds).items()})
    flops = 2.0 * m * n * k
    row["fused_tflops"] = flops / row["fused_ms"] / 1e9
    row["f_linear_tflops"] = flops / row["f_linear_ms"] / 1e9
    row["fused_over_f_linear"] = row["fused_ms"] / row["f_linear_ms"]
    row["chain_overhead"] = row["fused_ms"] / row["fused_empty_chain_ms"] - 1
    row["speedup_vs_eager"] = row["eager_ms"] / row["fused_ms"]
    row["speedup_vs_compile"] = row["compile_ms"] / row["fused_ms"]
    return row


def table(rows):
    lines = ["| problem | M | N | K | fused ms | empty chain ms | F.linear ms | eager ms | compile ms | fused TFLOP/s |"
             " fused / F.linear | chain cost | vs eager | vs compile | config |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        config = r["path"].split("configuration ")[-1].split(" ")[0] if "configuration" in r["path"] else "fallback"
        lines.append(f"| {r['name']} | {r['m']} | {r['n']} | {r['k']} | {r['fused_ms']:.4f} | "
                     f"{r['fused_empty_chain_ms']:.4f} | {r['f_linear_ms']:.4f} | {r['eager_ms']:.4f} | "
                     f"{r['compile_ms']:.4f} | {r['fused_tflops']:.0f} | {r['fused_over_f_linear']:.3f} | "
                     f"{r['chain_overhead']:+.1%} | {r['speedup_vs_eager']:.2f}x | {r['speedup_vs_compile']:.2f}x | "
                     f"{config} |")
    return "\n".join(lines)


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    sweep = [r for r in rows if r["name"] == "sweep"]
    if not sweep:
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for n, k in sorted({(r["n"], r["k"]) for r in sweep}):
        pts = sorted((r["m"], r["fused_over_f_linear"]) for r in sweep if (r["n"], r["k"]) == (n, k))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"N={n}, K={k}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(1.15, color="red", linewidth=0.8, linestyle="--")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("M (rows)")
    ax.set_ylabel("fused time / F.linear time (lower is better)")
    ax.set_title(f"cutlass_ext.linear with '{CHAIN_GELU}', bf16, {torch.cuda.get_device_name()}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def host_overhead():
    """CPU time per call on a tiny problem (the GPU idles): what each layer adds before the kernel starts."""
    import time
    x = torch.randn(8, 64, device="cuda", dtype=DTYPE)
    w = torch.randn(64, 64, device="cuda", dtype=DTYPE)
    b = torch.randn(64, device="cuda", dtype=DTYPE)
    epi = cutlass_ext.Epilogue(CHAIN_GELU)
    encoded = epi.encode()
    calls = {
        "F.linear": lambda: F.linear(x, w, b),
        "torch.ops.cutlass_ext.fused_linear": lambda: torch.ops.cutlass_ext.fused_linear(x, w, b, *encoded, ""),
        "cutlass_ext.linear": lambda: cutlass_ext.linear(x, w, b, epi),
    }
    out = {}
    for name, fn in calls.items():
        for _ in range(50):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(2000):
            fn()
        out[name] = (time.perf_counter() - t0) / 2000 * 1e6
        torch.cuda.synchronize()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--quick", action="store_true", help="the acceptance rows only, no sweep")
    parser.add_argument("--rep", type=int, default=100, help="do_bench rep (ms) per measurement of the problem rows")
    parser.add_argument("--rounds", type=int, default=3, help="rotated rounds per row (common.py)")
    args = parser.parse_args()
    assert cutlass_ext.native_info().loaded, str(cutlass_ext.native_info())
    torch.manual_seed(0)
    compiled = {}
    rows = [
        measure("linear_scale_hardtanh_gelu", 2048, 8192, 8192, CHAIN_GELU, compiled, args.rep, args.rounds),
        measure("linear_swish_div_clamp_tanh_clamp", 1024, 8192, 8192, CHAIN_SWISH, compiled, args.rep, args.rounds),
        measure("gelu_4096x1024x1024", 4096, 1024, 1024, "gelu", compiled, args.rep, args.rounds),
    ]
    if not args.quick:
        for n, k in [(nk, kk) for nk in (1024, 4096, 8192) for kk in (1024, 4096, 8192)]:
            for m in (1, 16, 128, 512, 2048, 8192, 16384):
                rows.append(measure("sweep", m, n, k, CHAIN_GELU, compiled, max(args.rep // 2, 25), args.rounds))
    meta = run_meta(dtype=str(DTYPE))
    text = f"GPU: {meta['gpu']}, torch {meta['torch']}, bf16, {meta['date']}; medians (ms) of triton do_bench, "
    text += f"{args.rounds} rotated rounds at sustained clocks\n\n"
    text += table(rows)
    sweep = [r for r in rows if r["name"] == "sweep" and r["m"] >= 128]
    overhead = host_overhead()
    meta["host_us_per_call"] = overhead
    out = write_results(args.out, "bench_linear", meta, rows, text)
    plot(rows, out / "bench_linear.png")
    print(table(rows[:3]))
    print("host time per call (us): " + ", ".join(f"{k} {v:.1f}" for k, v in overhead.items()))
    if sweep:
        worst = max(sweep, key=lambda r: r["fused_over_f_linear"])
        print(f"\nsweep, M >= 128: worst fused/F.linear {worst['fused_over_f_linear']:.3f} at "
              f"{worst['m']}x{worst['n']}x{worst['k']}; "
              f"{sum(r['fused_over_f_linear'] <= 1.0 for r in sweep)}/{len(sweep)} rows at or under 1.00")


if __name__ == "__main__":
    main()
