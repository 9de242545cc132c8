"""Opt-in autotuning of the fused Linear's kernel configuration.

Off by default: the shape heuristic in cutlass_ext/src/fused_linear_registry.cpp picks a configuration. When on
(``cutlass_ext.autotune.enable()`` or ``CUTLASS_EXT_AUTOTUNE=1``), the first call for a (GPU, dtype, float32
precision, M, N, K, bias, chain) key times every compiled configuration on the call's own inputs, keeps the fastest in memory and in
``$CUTLASS_EXT_CACHE_DIR/autotune.json`` (default ``~/.cache/cutlass_ext``), and reuses it from then on, in this
process and later ones. Compiled graphs (torch.compile) use cached winners only, never tune while tracing.
``cutlass_ext.linear_path`` shows which configuration runs.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile

import torch

ENV = "CUTLASS_EXT_AUTOTUNE"
_enabled = os.environ.get(ENV) == "1"
_memory: dict[str, str] = {}
_loaded_from: str | None = None


def enable(on: bool = True) -> None:
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled


def cache_file() -> str:
    root = os.environ.get("CUTLASS_EXT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cutlass_ext")
    return os.path.join(root, "autotune.json")


def clear() -> None:
    """Forgets every tuned configuration, in memory and on disk."""
    _memory.clear()
    try:
        os.remove(cache_file())
    except FileNotFoundError:
        pass


def _load() -> None:
    global _loaded_from
    path = cache_file()
    if _loaded_from == path:
        return
    _loaded_from = path
    try:
        with open(path) as f:
            _memory.update(json.load(f))
    except (OSError, ValueError):
        pass


def _save() -> None:
    path = cache_file()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(path), delete=False, suffix=".tmp") as f:
        json.dump(_memory, f, indent=1, sort_keys=True)
    os.replace(f.name, path)


def key(x: torch.Tensor, weight: torch.Tensor, bias, epilogue, precision: str = "") -> str:
    n, k = weight.shape
    m = x.numel() // k if k else 0
    gpu = torch.cuda.get_device_name(x.device)
    dtype = str(x.dtype)[6:] + (f"/{precision}" if precision else "")
    return f"{gpu}|{dtype}|m={m}|n={n}|k={k}|bias={bias is not None}|{epilogue}"


def cached_config(x, weight, bias, epilogue, precision: str = "") -> str | None:
    _load()
    return _memory.get(key(x, weight, bias, epilogue, precision))


def config_for(x, weight, bias, epilogue, precision: str = "", weight_split=None) -> str:
    """The configuration to run: the tuned one when tuning is on (tuning now if this key is new), else ''."""
    if not _enabled:
        return ""
    found = cached_config(x, weight, bias, epilogue, precision)
    if found is None:
        found = _tune(x, weight, bias, epilogue, precision, weight_split)
        _memory[key(x, weight, bias, epilogue, precision)] = found
        _save()
    return found


def _time(fn, reps: int = 10) -> float:
    fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _tune(x, weight, bias, epilogue, precision, weight_split) -> str:
    args = (x, weight, bias, *epilogue.encode())
    results = {}
    for name in torch.ops.cutlass_ext.fused_linear_configs(x.dtype):
        try:
            results[name] = _time(lambda: torch.ops.cutlass_ext.fused_linear(*args, name, precision, weight_split))
        except RuntimeError:
            continue  # a configuration that cannot run this problem
    if not results:
        return ""
    return min(results, key=results.get)
