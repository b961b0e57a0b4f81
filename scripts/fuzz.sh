#!/usr/bin/env bash
# Fuzzes the pure parsers with libFuzzer for a bounded time each.
#   scripts/fuzz.sh [SECONDS] [TARGET…]     (default: 20 s, every fuzz/<target>.swift)
# A crash, trap, leak or timeout leaves the input in .build-fuzz/<target>/ and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/opt/swift/usr/bin
seconds=${1:-20}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in fuzz/*.swift; do
        n=$(basename "$f" .swift)
        [ "$n" = Entry ] || targets+=("$n")
    done
fi
for t in "${targets[@]}"; do
    out=.build-fuzz/$t
    mkdir -p "$out/corpus"
    swiftc -sanitize=fuzzer,address -parse-as-library -O -module-name Fuzz \
        fuzz/Entry.swift "fuzz/$t.swift" Sources/LifeboatFormats/*.swift -o "$out/fuzz" 2> "$out/build.log" \
        || { cat "$out/build.log" >&2; exit 1; }
    fuzz/seeds.sh "$t" "$out/seeds"
    echo "fuzz $t: ${seconds}s"
    (cd "$out" && ./fuzz -max_total_time="$seconds" -max_len=4194304 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 corpus seeds > run.log 2>&1) || { tail -40 "$out/run.log" >&2; echo "fuzz $t: FAILED (input saved in $out)" >&2; exit 1; }
    grep -E 'stat::number_of_executed_units' "$out/run.log" | sed "s/^/  $t /"
done
