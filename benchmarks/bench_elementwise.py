"""The standalone elementwise kernel against a device-to-device copy (the bandwidth ceiling), eager PyTorch and
torch.compile, on shared/problems/hardtanh_large.py (4096 x 393216) and 3-op chains over the same tensor.

    python benchmarks/bench_elementwise.py [--out DIR] [--rows 4096] [--cols 393216]

Bandwidth counts the bytes that must move: the input read once and the output written once. Times are medians
of triton.testing.do_bench on one GPU, all columns of a row measured side by side in 3 rotated rounds at the
GPU's sustained clocks (common.py).
"""

import argparse
import os

import torch
import torch.nn.functional as F

import cutlass_ext
from common import load_problem, run_meta, timed, write_results



def chains():
    """(name, epilogue, eager torch function): the workloads."""
    problem = load_problem("hardtanh_large", missing_ok=True)
    hardtanh_eager = problem.Model() if problem else (lambda x: F.hardtanh(x, -1.0, 1.0))
    return [
        ("hardtanh_large", "hardtanh(-1, 1)", hardtanh_eager),
        ("mul_hardtanh_gelu", "mul(0.5) | hardtanh(-2, 2) | gelu", lambda x: F.gelu(F.hardtanh(x * 0.5, -2, 2))),
        ("silu_div_clamp", "silu | div(2) | clamp(-1, 1)", lambda x: torch.clamp(F.silu(x) / 2, -1, 1)),
    ], problem is not None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for the .md and .json results")
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--cols", type=int, default=393216)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args()
    assert cutlass_ext.native_info().loaded, str(cutlass_ext.native_info())

    workloads, from_problem_file = chains()
    results = []
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        # torch.rand as in hardtanh_large.get_inputs(), widened to [-3, 3) so that every branch of every op is taken.
        x = (torch.rand(args.rows, args.cols, device="cuda") * 6 - 3).to(dtype)
        out = torch.empty_like(x)
        nbytes = 2 * x.numel() * x.element_size()
        for name, text, eager in workloads:
            epi = cutlass_ext.Epilogue(text)
            compiled = torch.compile(eager)
            ours = cutlass_ext.elementwise(x, epi)
            want = eager(x)
            # Same fp32 math as torch for each op; eager rounds to the dtype between ops, we round once at the end.
            exact = torch.equal(ours, want)
            max_err = (ours.float() - want.float()).abs().max().item()
            del ours, want
            fns = {"copy": lambda: out.copy_(x), "cutlass_ext": lambda: cutlass_ext.elementwise(x, epi, out=out),
                   "eager": lambda: eager(x), "compile": lambda: compiled(x)}
            row = {"workload": name, "epilogue": text, "dtype": dtype_name, "shape": [args.rows, args.cols],
                   "identical_to_eager": exact, "max_abs_diff_vs_eager": max_err}
            row.update({f"{key}_ms": ms for key, ms in timed(fns, 150, 3).items()})
            copy_ms = row["copy_ms"]
            row["cutlass_ext_GBps"] = nbytes / row["cutlass_ext_ms"] / 1e6
            row["copy_GBps"] = nbytes / copy_ms / 1e6
            row["fraction_of_copy"] = copy_ms / row["cutlass_ext_ms"]
            row["speedup_vs_eager"] = row["eager_ms"] / row["cutlass_ext_ms"]
            row["speedup_vs_compile"] = row["compile_ms"] / row["cutlass_ext_ms"]
            results.append(row)
            torch.cuda.empty_cache()
        del x, out
        torch.cuda.empty_cache()

    meta = run_meta(eager_from_problem_file=from_problem_file)
    lines = [f"GPU: {meta['gpu']}, torch {meta['torch']}, {meta['date']}; medians (ms) of triton do_bench, 3 "
             "rotated rounds at sustained clocks", "",
             "| workload | dtype | copy | cutlass_ext | eager | compile | ext GB/s | of copy | vs eager | vs compile | = eager |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['workload']} | {r['dtype']} | {r['copy_ms']:.3f} | {r['cutlass_ext_ms']:.3f} | "
                     f"{r['eager_ms']:.3f} | {r['compile_ms']:.3f} | {r['cutlass_ext_GBps']:.0f} | "
                     f"{r['fraction_of_copy']:.1%} | {r['speedup_vs_eager']:.2f}x | {r['speedup_vs_compile']:.2f}x | "
                     f"{'yes' if r['identical_to_eager'] else 'max diff %.2g' % r['max_abs_diff_vs_eager']} |")
    table = "\n".join(lines)
    write_results(args.out, "bench_elementwise", meta, results, table)
    print(table)


if __name__ == "__main__":
    main()
