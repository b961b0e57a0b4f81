#!/usr/bin/env bash
# Fuzzes the pure parsers with libFuzzer for a bounded time each.
#   scripts/fuzz.sh [SECONDS] [TARGET…]     (default: 20 s, every target in fuzz/Entry.swift)
# A crash, trap, leak or timeout leaves the input in .build-fuzz/<target>/ and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/opt/swift/usr/bin
seconds=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(sed -n 's/^    "\([a-z0-9]*\)": .*/\1/p' fuzz/Entry.swift)
mkdir -p .build-fuzz
swiftc -sanitize=fuzzer,address -parse-as-library -O -module-name Fuzz \
    fuzz/Entry.swift Sources/LifeboatFormats/*.swift -o .build-fuzz/fuzz 2> .build-fuzz/build.log \
    || { cat .build-fuzz/build.log >&2; exit 1; }
for t in "${targets[@]}"; do
    out=.build-fuzz/$t
    mkdir -p "$out/corpus"
    fuzz/seeds.sh "$t" "$out/seeds"
    (cd "$out" && FUZZ_TARGET=$t ../fuzz -max_total_time="$seconds" -max_len=4194304 -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 corpus seeds > run.log 2>&1) \
        || { tail -40 "$out/run.log" >&2; echo "fuzz $t: FAILED (input saved in $out)" >&2; exit 1; }
    echo "fuzz $t: ${seconds} s, $(sed -n 's/^stat::number_of_executed_units: *//p' "$out/run.log") inputs, no crash"
done
