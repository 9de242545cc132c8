"""Linear -> GroupNorm -> hardtanh (shared/problems/linear_groupnorm_hardtanh.py): the fused module against
F.linear alone (the bar), eager PyTorch and torch.compile. In bf16 / fp16 the module runs one GEMM with the norm in
its epilogue (groups of 512 features); in float32, one GEMM then one pass for the norm and the chain.

    python benchmarks/bench_norm.py [--out DIR] [--rep MS] [--rounds N]

bf16 and fp16 at the problem's shape, float32 'highest' too (time, and allclose(1e-4) against the float32 model
on 5 fresh inputs). Where the time goes: the GEMM alone (bias only), the two-pass form (that GEMM, then the
stage), the stage alone (group_norm_chain on a GEMM output), and two floors for any second pass over the output: a cheap
elementwise chain (the compiled elementwise kernel) and a copy (torch clone). The stage is also timed for
G = 1, 16, 256 and N. Times are medians of triton do_bench; the columns of a row are timed in N rotated rounds
at the GPU's sustained clocks (common.py) and the median of the rounds is kept, so that ratios are side by side.
Writes bench_norm.md and .json.
"""

import argparse
import os

import torch
import torch.nn.functional as F

import cutlass_ext
from common import load_problem, run_meta, timed, write_results
from cutlass_ext.nn import FusedLinear
from cutlass_ext.ops import _float32_matmul_precision as matmul_precision

NAME = "linear_groupnorm_hardtanh"
POST = "hardtanh(-2, 2)"


def measure(mod, dtype, rep, rounds):
    torch.manual_seed(0)
    model = mod.Model(*mod.get_init_inputs()).to("cuda", dtype)
    precision = "highest" if dtype == torch.float32 else None
    fused = FusedLinear.from_linear_and_norm(model.gemm, model.group_norm, post=POST, precision=precision)
    gemm = FusedLinear.from_linear(model.gemm, precision=precision)
    x = mod.get_inputs()[0].to("cuda", dtype)
    w, b, gn = model.gemm.weight, model.gemm.bias, model.group_norm
    m, k = x.shape
    n = w.shape[0]
    row = {"dtype": str(dtype).replace("torch.", ""), "m": m, "n": n, "k": k, "groups": gn.num_groups}
    with torch.no_grad(), matmul_precision(precision or torch.get_float32_matmul_precision()):
        row["path"] = str(cutlass_ext.linear_path(x, w, b, fused.epilogue, precision))
        compiled = torch.compile(model)
        compiled(x)
        y = gemm(x)
        _, norm, post = fused.epilogue.split()
        stage = lambda t, g=gn.num_groups: torch.ops.cutlass_ext.group_norm_chain(  # noqa: E731
            t, g, gn.weight, gn.bias, gn.eps, *post.encode())
        cheap = cutlass_ext.Epilogue(POST)
        fns = {"fused": lambda: fused(x), "f_linear": lambda: F.linear(x, w, b), "eager": lambda: model(x),
               "compile": lambda: compiled(x), "gemm_alone": lambda: gemm(x), "two_pass": lambda: stage(gemm(x)),
               "stage_alone": lambda: stage(y),
               "elementwise_pass": lambda: cutlass_ext.elementwise(y, cheap), "copy_pass": lambda: y.clone()}
        for g in sorted({1, 16, 256, n}):
            fns[f"stage_G{g}"] = lambda g=g: stage(y, g)
        row.update({f"{name}_ms": t for name, t in timed(fns, rep, rounds).items()})
        worst, all_close = 0.0, True
        for _ in range(5):
            xi = mod.get_inputs()[0].to("cuda", dtype)
            got, want = fused(xi), model(xi)
            worst = max(worst, (got.float() - want.float()).abs().max().item())
            all_close &= torch.allclose(got, want, rtol=1e-4, atol=1e-4) if dtype == torch.float32 else True
    row["max_abs_diff_vs_model"] = worst
    if dtype == torch.float32:
        row["allclose_1e-4_5_inputs"] = bool(all_close)
    row["fused_over_f_linear"] = row["fused_ms"] / row["f_linear_ms"]
    row["speedup_vs_eager"] = row["eager_ms"] / row["fused_ms"]
    row["speedup_vs_compile"] = row["compile_ms"] / row["fused_ms"]
    gbytes = 2 * m * n * x.element_size() / 1e9
    row["stage_gb_per_s"] = gbytes / row["stage_alone_ms"] * 1e3
    return row


def table(rows):
    lines = ["| dtype | fused ms | F.linear ms | eager ms | compile ms | fused / F.linear | vs eager | vs compile | "
             "GEMM alone | two passes | stage alone (GB/s) | elementwise pass | copy | stage G=1 / 16 / 256 / N | "
             "max diff vs model |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        stages = " / ".join(f"{r[key]:.4f}" for key in sorted((k for k in r if k.startswith("stage_G")),
                                                               key=lambda s: int(s[7:-3])))
        close = f" (allclose 1e-4: {r['allclose_1e-4_5_inputs']})" if "allclose_1e-4_5_inputs" in r else ""
        lines.append(
            f"| {r['dtype']} | {r['fused_ms']:.4f} | {r['f_linear_ms']:.4f} | {r['eager_ms']:.4f} | "
            f"{r['compile_ms']:.4f} | {r['fused_over_f_linear']:.3f} | {r['speedup_vs_eager']:.2f}x | "
            f"{r['speedup_vs_compile']:.2f}x | {r['gemm_alone_ms']:.4f} | {r['two_pass_ms']:.4f} | "
            f"{r['stage_alone_ms']:.4f} "
            f"({r['stage_gb_per_s']:.0f}) | {r['elementwise_pass_ms']:.4f} | {r['copy_pass_ms']:.4f} | {stages} | "
            f"{r['max_abs_diff_vs_model']:.1e}{close} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--rep", type=int, default=100, help="do_bench rep (ms) per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rotated rounds per row (common.py)")
    args = parser.parse_args()
    assert cutlass_ext.native_info().loaded, str(cutlass_ext.native_info())
    mod = load_problem(NAME)
    rows = [measure(mod, dtype, args.rep, args.rounds) for dtype in (torch.bfloat16, torch.float16, torch.float32)]
    meta = run_meta(rounds=args.rounds)
    paths = "; ".join(f"{r['dtype']}: {r['path']}" for r in rows)
    text = (f"GPU: {meta['gpu']}, torch {meta['torch']}, {meta['date']}; {NAME}, medians (ms) of triton do_bench "
            f"over {args.rounds} rotated rounds at sustained clocks; float32 at precision 'highest'.\n\n"
            f"Paths: {paths}\n\n" +
            table(rows))
    write_results(args.out, "bench_norm", meta, rows, text)
    print(table(rows))


if __name__ == "__main__":
    main()
