"""Float32 inputs: the fused Linear at precision 'highest' (split TF32, FP32-level error) and 'high' (TF32) on the
reference problems, against PyTorch float32 (eager, torch.compile, F.linear alone as SGEMM and as TF32).

    python benchmarks/bench_float32.py [--out DIR] [--rep MS] [--rounds 3]

Per problem (shared/problems, their own shapes and torch.rand inputs): times (medians of triton do_bench over
rotated rounds at the GPU's sustained clocks, common.py), the allclose(atol=rtol=1e-4) check against the float32
model on 5 fresh inputs, and the GEMM's relative error (Frobenius norm) against float64 for SGEMM, cuBLAS TF32 and
ours. The GroupNorm model runs as FusedLinear.from_linear_and_norm (the GEMM, then one pass for GroupNorm +
hardtanh). Writes bench_float32.md and .json.
"""

import argparse
import os

import torch
import torch.nn.functional as F

import cutlass_ext
from common import load_problem, run_meta, timed, write_results
from cutlass_ext.nn import FusedLinear
from cutlass_ext.ops import _float32_matmul_precision as matmul_precision

CHAINS = {
    "linear_scale_hardtanh_gelu": "mul(0.5) | hardtanh(-2, 2) | gelu",
    "linear_swish_div_clamp_tanh_clamp": "silu | div(2) | clamp(-1, 1) | tanh | clamp(-1, 1)",
    "linear_groupnorm_hardtanh": "group_norm(16) | hardtanh(-2, 2)",  # built from the model's GroupNorm
}


def rel_error(got, ref):
    return ((got.double() - ref).norm() / ref.norm()).item()


def measure(name, rep, rounds):
    mod = load_problem(name)
    torch.manual_seed(0)
    model = mod.Model(*mod.get_init_inputs()).to("cuda")
    w, b = model.gemm.weight, model.gemm.bias
    if name == "linear_groupnorm_hardtanh":
        fused = {p: FusedLinear.from_linear_and_norm(model.gemm, model.group_norm, post="hardtanh(-2, 2)",
                                                     precision=p) for p in ("highest", "high")}
    else:
        fused = {p: FusedLinear.from_linear(model.gemm, CHAINS[name], precision=p) for p in ("highest", "high")}
    ours = fused
    x = mod.get_inputs()[0].to("cuda")
    m, k = x.shape
    row = {"name": name, "m": m, "n": w.shape[0], "k": k, "chain": CHAINS[name],
           "path_highest": str(cutlass_ext.linear_path(x, w, b, fused["highest"].epilogue, "highest"))}

    def at(precision, fn):  # F.linear and torch.compile read torch's setting on each call
        def run():
            with matmul_precision(precision):
                return fn()
        return run

    with torch.no_grad():
        with matmul_precision("highest"):
            compiled = torch.compile(model)
            compiled(x)
        fns = {"eager": at("highest", lambda: model(x)), "compile": at("highest", lambda: compiled(x)),
               "sgemm_f_linear": at("highest", lambda: F.linear(x, w, b)),
               "fused_highest": lambda: ours["highest"](x),
               "fused_highest_empty_chain": lambda: cutlass_ext.linear(x, w, b, None, "highest"),
               "tf32_f_linear": at("high", lambda: F.linear(x, w, b)), "fused_high": lambda: ours["high"](x)}
        row.update({f"{key}_ms": ms for key, ms in timed(fns, rep, rounds).items()})

        # Accuracy: the acceptance check on 5 fresh inputs, and the GEMM's error against float64 on the first.
        worst, all_close = 0.0, True
        for i in range(5):
            xi = mod.get_inputs()[0].to("cuda")
            with matmul_precision("highest"):
                want, got = model(xi), ours["highest"](xi)
            worst = max(worst, (got - want).abs().max().item())
            all_close &= torch.allclose(got, want, rtol=1e-4, atol=1e-4)
            if i == 0:
                ref = F.linear(xi.double(), w.double(), b.double())
                with matmul_precision("highest"):
                    row["rel_err_sgemm"] = rel_error(F.linear(xi, w, b), ref)
                    row["rel_err_fused_highest"] = rel_error(cutlass_ext.linear(xi, w, b, None, "highest"), ref)
                with matmul_precision("high"):
                    row["rel_err_cublas_tf32"] = rel_error(F.linear(xi, w, b), ref)
                    row["rel_err_fused_high"] = rel_error(cutlass_ext.linear(xi, w, b, None, "high"), ref)
        row["allclose_1e-4_5_inputs"] = bool(all_close)
        row["max_abs_diff_vs_model"] = worst
    row["highest_speedup_vs_eager"] = row["eager_ms"] / row["fused_highest_ms"]
    row["highest_speedup_vs_sgemm"] = row["sgemm_f_linear_ms"] / row["fused_highest_ms"]
    row["high_over_tf32_f_linear"] = row["fused_high_ms"] / row["tf32_f_linear_ms"]
    row["err_ratio_highest_vs_sgemm"] = row["rel_err_fused_highest"] / row["rel_err_sgemm"]
    return row


def table(rows):
    lines = ["| problem | M x N x K | eager ms | compile ms | SGEMM ms | highest ms | highest vs eager | "
             "TF32 F.linear ms | high ms | high / TF32 F.linear | allclose 1e-4 (5 inputs) | rel err SGEMM | "
             "rel err highest (ratio) | rel err TF32 cuBLAS / ours |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['m']}x{r['n']}x{r['k']} | {r['eager_ms']:.3f} | {r['compile_ms']:.3f} | "
            f"{r['sgemm_f_linear_ms']:.3f} | {r['fused_highest_ms']:.3f} | {r['highest_speedup_vs_eager']:.2f}x | "
            f"{r['tf32_f_linear_ms']:.3f} | {r['fused_high_ms']:.3f} | {r['high_over_tf32_f_linear']:.3f} | "
            f"{r['allclose_1e-4_5_inputs']} (max {r['max_abs_diff_vs_model']:.1e}) | {r['rel_err_sgemm']:.2e} | "
            f"{r['rel_err_fused_highest']:.2e} ({r['err_ratio_highest_vs_sgemm']:.2f}x) | "
            f"{r['rel_err_cublas_tf32']:.2e} / {r['rel_err_fused_high']:.2e} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--rep", type=int, default=100, help="do_bench rep (ms) per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rotated rounds per row (common.py)")
    args = parser.parse_args()
    assert cutlass_ext.native_info().loaded, str(cutlass_ext.native_info())
    rows = [measure(name, args.rep, args.rounds) for name in CHAINS]
    meta = run_meta()
    text = (f"GPU: {meta['gpu']}, torch {meta['torch']}, float32, {meta['date']}; medians (ms) of triton do_bench. "
            "'highest' = split TF32, 'high' = TF32.\n\n" + table(rows))
    write_results(args.out, "bench_float32", meta, rows, text)
    print(table(rows))


if __name__ == "__main__":
    main()
