"""What the benchmarks share: the reference problems, the timing, and the result files.

Why the settling and the rotation: for the first ~0.4 s of load after an idle spell (a torch.compile, a model load)
an H200 runs its SMs at 1980 MHz; then the clock drops to 1450-1620 MHz, and within another second the draw sits
at the card's 700 W limit. A 2048x8192x8192 bf16 GEMM takes 0.35 ms in that first spell and 0.39 ms after it
(docs/perf-notes.md, item 30), so whatever is timed first after an idle spell looks ~12% faster. So every function
runs once (compiling, allocating), the GPU is kept busy for `settle_s` seconds, and then the functions are timed in
`rounds` rounds, each starting one function later than the last, all at the clocks a sustained workload gets.
"""

import datetime
import importlib.util
import json
import os
import pathlib
import statistics
import time

import torch
from triton.testing import do_bench

PROBLEMS = pathlib.Path(os.environ.get("CUTLASS_EXT_PROBLEMS",
                                       pathlib.Path(__file__).resolve().parents[2] / "shared" / "problems"))


def load_problem(name, missing_ok=False):
    """The reference model file shared/problems/<name>.py (CUTLASS_EXT_PROBLEMS overrides the folder) as a module;
    None where it is missing and missing_ok."""
    path = PROBLEMS / f"{name}.py"
    if not path.is_file():
        if missing_ok:
            return None
        raise FileNotFoundError(f"{path} not found: set CUTLASS_EXT_PROBLEMS to the folder of the problem files")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def settle(fn, seconds):
    """Run fn back to back for `seconds` of GPU time: the power reading and the clocks reach their sustained level."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            fn()
        torch.cuda.synchronize()


def timed(fns, rep, rounds=3, settle_s=1.5):
    """{name: median over rounds of do_bench's median (ms)} for a dict of functions, in rotated interleaved rounds,
    after one call of each and `settle_s` seconds of running them."""
    names = list(fns)
    for name in names:
        fns[name]()
    settle(lambda: [fns[name]() for name in names], settle_s)
    runs = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            runs[name].append(do_bench(fns[name], warmup=max(rep // 4, 10), rep=rep, return_mode="median"))
    return {name: statistics.median(t) for name, t in runs.items()}


def run_meta(**extra):
    """What every result file records: the GPU, torch, the date, and what the benchmark adds."""
    return {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
            "date": datetime.datetime.now().isoformat(timespec="seconds"), **extra}


def write_results(out, name, meta, rows, text):
    """<out>/<name>.md (the markdown text) and <out>/<name>.json ({"meta", "rows"}), the folder made as needed;
    returns the folder."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(text + "\n")
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return out
