#!/usr/bin/env bash
# Audit benchmarks (docs/benchmarks.md, "Audit"):
#   1. batched ingest into SQLite: 1,000,000 realistic records appended through the
#      store in batches of 1,000 (audit/examples/fill.rs), plus criterion's figure
#      for one batch with CRITERION=1 (`cargo bench -p palisade-audit --bench ingest`);
#   2. `palisade audit report` over those 1,000,000 records (the whole chain checked,
#      the window counted, the file written), HTML and JSON, against
#      `palisade audit verify` (the chain walk alone) as the baseline of the same run.
# Each timing is the median of ROUNDS runs. Usage: bench/audit.sh [RECORDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-1000000}
rounds=${2:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
db="sqlite://$work/audit.db"

cargo build --release --locked --quiet --bin palisade
cargo build --release --locked --quiet -p palisade-audit --example fill
bin=target/release/palisade

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(date -u +%Y-%m-%dT%H:%MZ)"
echo "== ingest: $records records, batches of 1,000, SQLite (WAL)"
target/release/examples/fill "$db" "$records"
ls -l "$work/audit.db" | awk '{printf "database file: %.0f MB\n", $5 / 1e6}'

median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
timed() {
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" 'BEGIN {print b - a}'
}
for what in verify html json; do
    for _ in $(seq "$rounds"); do
        case $what in
            verify) timed "$bin" audit verify --database "$db" ;;
            *) timed "$bin" audit report --database "$db" --since 48h --format "$what" --out "$work/report.$what" ;;
        esac
    done | median | awk -v w="$what" '{printf "%-8s median %.2f s\n", w, $1}'
done
"$bin" audit report --database "$db" --since 48h --format html --out "$work/report.html"
ls -l "$work/report.html" | awk '{printf "report.html: %.0f KB\n", $5 / 1e3}'

if [ "${CRITERION:-0}" = 1 ]; then
    echo "== criterion: one batch of 1,000 decisions into SQLite"
    cargo bench --locked -p palisade-audit --bench ingest 2>&1 | grep -E "time:|thrpt:" || true
fi
