#!/usr/bin/env bash
# Installs what is missing, then builds and runs every test: the release
# build's suite, the same suite under AddressSanitizer and
# UndefinedBehaviorSanitizer, each libFuzzer target briefly, the format
# check, and the benchmark in its quick mode (it proves the instrument works;
# it asserts no speed).
#   FUZZ_SECONDS=N   seconds per fuzz target (default 30)
#   SKIP_BENCH=1     leave the benchmark out
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${SKIP_BENCH:-0}" == 1 ]]; then
    scripts/install-deps.sh --browser
else
    scripts/install-deps.sh --browser --bench --bench-refs
fi
jobs=$(nproc)
fuzz_seconds=${FUZZ_SECONDS:-30}

step() { printf '\n==== %s\n' "$*"; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT

step "format check"
git ls-files '*.cpp' '*.h' | xargs clang-format --dry-run -Werror

step "release build and tests"
cmake --preset release >/dev/null
cmake --build --preset release -j "$jobs"
ctest --preset release -j "$jobs" | tee -a "$log"

step "AddressSanitizer + UndefinedBehaviorSanitizer build and tests"
cmake --preset asan-ubsan >/dev/null
cmake --build --preset asan-ubsan -j "$jobs"
ctest --preset asan-ubsan -j "$jobs" | tee -a "$log"

step "libFuzzer targets, ${fuzz_seconds}s each"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$jobs" --target handshake_fuzz frames_fuzz
for target in handshake frames; do
    work=$(mktemp -d)
    cp -r "tests/fuzz/corpus/$target/." "$work/"
    dict=()
    [[ -f "tests/fuzz/$target.dict" ]] && dict=(-dict="tests/fuzz/$target.dict")
    echo "-- ${target}_fuzz"
    "build/fuzz/tests/fuzz/${target}_fuzz" "${dict[@]}" -max_total_time="$fuzz_seconds" \
        -print_final_stats=1 "$work" 2>&1 | tail -n 12
    rm -rf "$work"
done

if [[ "${SKIP_BENCH:-0}" != 1 && -x bench/run ]]; then
    step "benchmark, quick mode"
    # With every reference that Debian packages, so that each echo server
    # bench/run can start is proved to start and echo.
    bench/run --quick --servers wsgate,qt,beast,ws
fi

step "all tests passed"
# One closing line for both ctest runs (release, then sanitizers).
total=$(sed -n 's/.*tests passed, 0 tests failed out of \([0-9]*\).*/\1/p' "$log" |
    awk '{ n += $1 } END { print n + 0 }')
echo "all: $total passed, 0 failed"
