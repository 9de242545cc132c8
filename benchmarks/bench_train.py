"""A training step (forward and backward) of the GEMM reference problems, with their Linear replaced by FusedLinear,
against the same model in eager PyTorch, under torch.compile, and F.linear alone (forward and backward of the GEMM,
no tail: the floor).

    python benchmarks/bench_train.py [--out DIR] [--dtypes bfloat16] [--rounds 3]

Under autograd FusedLinear runs F.linear (cuBLAS) and the chain as one autograd node: one elementwise pass forward,
one chain-backward pass backward (cutlass_ext/ops.py), where eager PyTorch runs a kernel per op each way. A step is
model(x).backward(grad) with a fixed random grad, x requiring a gradient as a hidden layer's input does (three
GEMMs a step: the forward, grad x and grad weight); gradients are set to None before each step. Medians of
do_bench over --rounds rotated rounds at the GPU's sustained clocks (common.py). Also the largest relative
difference of the weight's gradient against eager's. Writes bench_train.md and .json.
"""

import argparse
import os

import torch
import torch.nn.functional as F

import cutlass_ext
from common import load_problem, run_meta, timed, write_results

# The problems' tails as chains (bench_linear.py's), for FusedLinear.from_linear on the model's own Linear.
PROBLEMS = {"linear_scale_hardtanh_gelu": "mul({scaling_factor}) | hardtanh({hardtanh_min}, {hardtanh_max}) | gelu",
            "linear_swish_div_clamp_tanh_clamp": "silu | div(2) | clamp(-1, 1) | tanh | clamp(-1, 1)"}


def measure(name, dtype, rounds, rep):
    mod = load_problem(name)
    torch.manual_seed(0)
    model = mod.Model(*mod.get_init_inputs()).to("cuda", dtype)
    chain = PROBLEMS[name].format(**vars(mod))  # the problem file's constants
    fused = cutlass_ext.nn.FusedLinear.from_linear(model.gemm, chain)
    compiled = torch.compile(model)
    x = mod.get_inputs()[0].to("cuda", dtype).requires_grad_()
    grad = torch.randn(x.shape[0], model.gemm.out_features, device="cuda", dtype=dtype)
    params = [x, *model.parameters()]

    def step(fn):
        def run():
            for p in params:
                p.grad = None
            fn(x).backward(grad)
        return run

    def weight_grad(fn):
        step(fn)()
        return model.gemm.weight.grad.double()

    eager_grad = weight_grad(model)
    diff = ((weight_grad(fused) - eager_grad).abs().max() / eager_grad.abs().max()).item()
    path = cutlass_ext.linear_path(x, model.gemm.weight, model.gemm.bias, chain)
    fns = {"fused": step(fused), "F.linear": step(lambda t: F.linear(t, model.gemm.weight, model.gemm.bias)),
           "eager": step(model), "compile": step(compiled)}
    ms = timed(fns, rep, rounds)
    return {"problem": name, "dtype": str(dtype).split(".")[-1], "shape": [x.shape[0], *model.gemm.weight.shape],
            "chain": chain, "ms": ms, "fused_over_f_linear": ms["fused"] / ms["F.linear"],
            "speedup_vs_eager": ms["eager"] / ms["fused"], "speedup_vs_compile": ms["compile"] / ms["fused"],
            "weight_grad_rel_diff_vs_eager": diff, "path": str(path)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--dtypes", default="bfloat16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rep", type=int, default=50, help="do_bench rep (ms) per measurement")
    args = parser.parse_args()
    assert cutlass_ext.native_info().loaded, str(cutlass_ext.native_info())
    rows = [measure(n, getattr(torch, d), args.rounds, args.rep) for d in args.dtypes.split(",") for n in PROBLEMS]
    meta = run_meta(rounds=args.rounds)
    lines = [f"GPU: {meta['gpu']}, torch {meta['torch']}, {meta['date']}; forward + backward, medians (ms) of "
             f"{args.rounds} rotated rounds at sustained clocks", "",
             f"Path: {rows[0]['path']}", "",
             "| problem | M x N x K | dtype | fused ms | F.linear ms | eager ms | compile ms | fused / F.linear |"
             " vs eager | vs compile | grad W rel. diff vs eager |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = r["ms"]
        lines.append(f"| {r['problem']} | {'x'.join(map(str, r['shape']))} | {r['dtype']} | {ms['fused']:.4f} |"
                     f" {ms['F.linear']:.4f} | {ms['eager']:.4f} | {ms['compile']:.4f} | {r['fused_over_f_linear']:.3f}"
                     f" | {r['speedup_vs_eager']:.2f}x | {r['speedup_vs_compile']:.2f}x |"
                     f" {r['weight_grad_rel_diff_vs_eager']:.1e} |")
    write_results(args.out, "bench_train", meta, rows, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
