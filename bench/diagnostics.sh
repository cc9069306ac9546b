#!/usr/bin/env bash
# How long `palisade policy validate` takes on a bundle whose egress.yaml has N
# entries, each with one problem (an empty label key): every diagnostic is located
# in the file. Usage: bench/diagnostics.sh [N] [BINARY]   (default 3000, target/release/palisade)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-3000}"
bin="${2:-target/release/palisade}"
[ -x "$bin" ] || cargo build --release --bin palisade
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cp -r examples/shop "$dir/bundle" && rm -rf "$dir/bundle/tests"
for ((i = 0; i < n; i++)); do
    printf -- "- host: h%d.example.com\n  ports: [443]\n  protocol: tls\n  workloads:\n    namespaces: [checkout]\n    labels: { '': x }\n" "$i"
done > "$dir/bundle/egress.yaml"
echo "egress.yaml: $(wc -c < "$dir/bundle/egress.yaml") bytes, $n bad entries"
for run in 1 2 3; do
    start=$(date +%s.%N)
    "$bin" policy validate "$dir/bundle" > "$dir/out.txt" 2>&1 || true
    end=$(date +%s.%N)
    echo "run $run: $(echo "$end - $start" | bc) s, $(grep -c '^error' "$dir/out.txt") diagnostics"
done
