"""cutlass_ext.fuse(model) on the reference problems of shared/problems, unchanged, against the model in eager
PyTorch, torch.compile(model) and F.linear alone (the model's own Linear with no tail: the bar).

    python benchmarks/bench_fuse.py [--out DIR] [--dtypes bfloat16,float32] [--rounds 3]

The model runs at the problem's own size on the problem's own inputs (get_inputs), under torch.no_grad(), float32
at torch's default 'highest' precision. Each column is the median over --rounds rotated rounds of do_bench's
median at the GPU's sustained clocks (common.py). Also the largest difference between the fused and the eager
model's outputs. Writes bench_fuse.md and .json.
"""

import argparse
import os

import torch
import torch.nn.functional as F

import cutlass_ext
from common import load_problem, run_meta, timed, write_results

NAMES = ["linear_scale_hardtanh_gelu", "linear_swish_div_clamp_tanh_clamp", "linear_groupnorm_hardtanh"]


def measure(name, dtype, rounds, rep):
    mod = load_problem(name)
    torch.manual_seed(0)
    model = mod.Model(*mod.get_init_inputs()).to("cuda", dtype).eval()
    fused = cutlass_ext.fuse(model)
    compiled = torch.compile(model)
    x = mod.get_inputs()[0].to("cuda", dtype)
    fns = {"fused": lambda: fused(x), "F.linear": lambda: F.linear(x, model.gemm.weight, model.gemm.bias),
           "eager": lambda: model(x), "compile": lambda: compiled(x)}
    (region,) = [m for m in fused.modules() if isinstance(m, cutlass_ext.fx.FusedRegion)]
    norm = [model.group_norm.weight, model.group_norm.bias] if hasattr(model, "group_norm") else []
    with torch.no_grad():
        path = region.path(x, model.gemm.weight, model.gemm.bias, *norm)
        diff = (fused(x).double() - model(x).double()).abs().max().item()
        ms = timed(fns, rep, rounds)
    return {"problem": name, "dtype": str(dtype).split(".")[-1], "shape": list(x.shape), "ms": ms,
            "fused_over_f_linear": ms["fused"] / ms["F.linear"], "speedup_vs_eager": ms["eager"] / ms["fused"],
            "speedup_vs_compile": ms["compile"] / ms["fused"], "max_abs_diff_vs_eager": diff,
            "path": str(path), "fuse_report": cutlass_ext.fx.report_lines(fused)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rep", type=int, default=50, help="do_bench rep (ms) per measurement")
    args = parser.parse_args()
    assert cutlass_ext.native_info().loaded, str(cutlass_ext.native_info())
    rows = [measure(name, getattr(torch, d), args.rounds, args.rep) for d in args.dtypes.split(",") for name in NAMES]
    meta = run_meta(rounds=args.rounds)
    lines = [f"GPU: {meta['gpu']}, torch {meta['torch']}, {meta['date']}; medians of {args.rounds} rotated rounds at "
             "sustained clocks",
             "", "| problem | dtype | fused ms | F.linear ms | eager ms | compile ms | fused / F.linear | vs eager |"
             " vs compile | max abs diff | configuration |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = r["ms"]
        config = r["path"].split("configuration ")[-1].split(" ")[0] if "configuration" in r["path"] else r["path"]
        lines.append(f"| {r['problem']} | {r['dtype']} | {ms['fused']:.4f} | {ms['F.linear']:.4f} | {ms['eager']:.4f} |"
                     f" {ms['compile']:.4f} | {r['fused_over_f_linear']:.3f} | {r['speedup_vs_eager']:.2f}x |"
                     f" {r['speedup_vs_compile']:.2f}x | {r['max_abs_diff_vs_eager']:.2e} | {config} |")
    write_results(args.out, "bench_fuse", meta, rows, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
