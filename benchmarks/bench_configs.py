"""Every compiled fused-Linear configuration against F.linear on chosen shapes: the data behind the shape heuristic
(src/fused_linear_registry.cpp).

    python benchmarks/bench_configs.py [--shapes 128x1024x8192,...] [--chain TEXT] [--configs NAME,...] [--rounds 3]
                                       [--out DIR]

For each shape (M x N x K, bf16 unless --dtype; float32 times the TF32 kernels against F.linear with TF32 on),
every configuration is timed with triton's do_bench (median) in --rounds rotated rounds beside F.linear, and
reported as its median time over F.linear's in the same rounds. --configs times only the configurations whose
names contain one of the given strings (the heuristic's pick then reads "not timed" when it is not among them).
Split-K configurations are skipped where the output has more than 4M elements (they would cut their splits down to
fit their workspace). Writes bench_configs.md and .json; prints, per shape, the heuristic's pick and the best.
"""

import argparse
import os

import torch
import torch.nn.functional as F

import cutlass_ext
from common import run_meta, timed, write_results

# The sweep's small-output rows (where split K may pay) and its K = 4096 rows with many tiles.
DEFAULT_SHAPES = ([(m, n, k) for m in (1, 16, 128, 512) for n in (1024, 4096, 8192) for k in (1024, 4096, 8192)] +
                  [(2048, 1024, k) for k in (1024, 4096, 8192)] +
                  [(m, n, 4096) for m in (2048, 8192, 16384) for n in (1024, 4096, 8192)])


def parse_shapes(text):
    return [tuple(int(v) for v in s.split("x")) for s in text.split(",") if s]


def fmt(ratio, missing="(not timed)"):
    return missing if ratio is None else f"{ratio:.3f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=parse_shapes, default=DEFAULT_SHAPES)
    parser.add_argument("--chain", default="mul(0.5) | hardtanh(-2, 2) | gelu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rep", type=int, default=20, help="do_bench rep (ms) per measurement")
    parser.add_argument("--configs", default="", help="time only configurations whose name contains one of these "
                        "comma-separated strings (default: all)")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    assert cutlass_ext.native_info().loaded, str(cutlass_ext.native_info())
    dtype = getattr(torch, args.dtype)
    precision = ""
    if dtype == torch.float32:  # 'high': the TF32 kernels, and F.linear on TF32 tensor cores too
        torch.backends.cuda.matmul.allow_tf32 = True
        precision = "high"
    epi = cutlass_ext.Epilogue(args.chain)
    encoded = epi.encode()
    configs = torch.ops.cutlass_ext.fused_linear_configs(dtype)
    if args.configs:
        configs = [c for c in configs if any(part in c for part in args.configs.split(","))]
    rows = []
    for m, n, k in args.shapes:
        x = torch.randn(m, k, device="cuda", dtype=dtype)
        w = ((torch.rand(n, k, device="cuda") * 2 - 1) / k ** 0.5).to(dtype)
        b = ((torch.rand(n, device="cuda") * 2 - 1) / k ** 0.5).to(dtype)
        names = [c for c in configs if "_splitk" not in c or m * n <= 4 << 20]
        calls = {"F.linear": lambda: F.linear(x, w, b)}
        for name in names:
            calls[name] = (lambda name=name: torch.ops.cutlass_ext.fused_linear.default(x, w, b, *encoded, name,
                                                                                       precision))
        ms = timed(calls, args.rep, args.rounds)
        pick = torch.ops.cutlass_ext.fused_linear_plan(x, w, b, *encoded, precision)
        ratios = {name: ms[name] / ms["F.linear"] for name in names}
        best = min(ratios, key=ratios.get)
        rows.append({"m": m, "n": n, "k": k, "f_linear_ms": ms["F.linear"], "ratios": ratios, "pick": pick,
                     "best": best})
        print(f"{m}x{n}x{k}: F.linear {ms['F.linear'] * 1e3:.1f} us; pick {pick} {fmt(ratios.get(pick))}; "
              f"best {best} {ratios[best]:.3f}", flush=True)
    meta = run_meta(dtype=args.dtype, chain=args.chain, rounds=args.rounds)
    short = {c: c.split("_", 1)[1] for c in configs}
    lines = [f"GPU: {meta['gpu']}, {args.dtype}, chain '{args.chain}', {meta['date']}; time / F.linear (medians of "
             f"{args.rounds} rotated rounds at sustained clocks)", "",
             "| M | N | K | F.linear us | pick | best | " + " | ".join(short.values()) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(configs)]
    for r in rows:
        cells = [fmt(r["ratios"].get(c), "") for c in configs]
        pick, best = r["pick"], r["best"]
        lines.append(f"| {r['m']} | {r['n']} | {r['k']} | {r['f_linear_ms'] * 1e3:.1f} | "
                     f"{pick.split('_', 1)[1]} {fmt(r['ratios'].get(pick))} | {short[best]} {r['ratios'][best]:.3f} | "
                     + " | ".join(cells) + " |")
    write_results(args.out, "bench_configs", meta, rows, "\n".join(lines))


if __name__ == "__main__":
    main()
