#!/usr/bin/env bash
# One GPU session on a machine without network (the project's device runs): install the carried nvidia-cutlass
# wheel, build and install the package with the preinstalled torch, run every test with the compiled module
# required, then the benchmarks. Logs and results go to $OUT (default ./gpu-out); the summary is printed last.
#   usage: bash benchmarks/gpu_session.sh [pytest args...]
# BENCH: the benchmarks to run, by the name after bench_ (default: elementwise linear); BENCH_ARGS: extra arguments
# for bench_linear.py (e.g. --quick); TESTS=0 skips the tests.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CUTLASS_EXT_REQUIRE_NATIVE=1

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"

if [ -n "${CUTLASS_EXT_LIBRARY:-}" ]; then
  # A module built elsewhere for this torch (CUTLASS_EXT_LIBRARY=path/_C.so, _build_info.json beside it): no
  # build here, the package from the source tree.
  export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
  python3 -m cutlass_ext | tee "$OUT/check.txt"
else
  start=$(date +%s)
  python3 -m pip install -v --no-build-isolation --no-deps . > "$OUT/build.log" 2>&1
  build_rc=$?
  echo "build rc=$build_rc in $(( $(date +%s) - start )) s"
  if [ $build_rc -ne 0 ]; then tail -40 "$OUT/build.log"; exit 1; fi
  cd /tmp  # import the installed package, not the source tree
  python3 -m cutlass_ext | tee "$OUT/check.txt"
  cd - >/dev/null
fi

test_rc=skipped
if [ "${TESTS:-1}" != 0 ]; then
  python3 -m pytest -q -rfEs tests "$@" > "$OUT/tests.log" 2>&1
  test_rc=$?
fi
bench_rc=""
for b in ${BENCH-elementwise linear}; do
  args=""; [ "$b" = linear ] && args="${BENCH_ARGS:-}"
  python3 benchmarks/bench_$b.py --out "$OUT" $args > "$OUT/bench_$b.log" 2>&1
  bench_rc="$bench_rc $b=$?"
done

echo "== tests (rc=$test_rc) =="; grep -sE "^(FAILED|ERROR)|passed|failed" "$OUT/tests.log" | tail -25
for b in ${BENCH-elementwise linear}; do echo "== bench $b ($bench_rc) =="; tail -14 "$OUT/bench_$b.log"; done
