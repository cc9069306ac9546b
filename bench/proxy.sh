#!/usr/bin/env bash
# End-to-end proxy benchmark: direct client → app versus client → sidecar → sidecar
# → app, with the examples/shop policies loaded, at a fixed 1,000 rps (hey) and at
# maximum throughput (wrk). Prints added p50/p99 latency, the throughput ratio and
# each sidecar's RSS and CPU. Every process it starts is on loopback and is stopped
# at the end. Usage: bench/proxy.sh [--rounds N] [--duration SECONDS] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need hey; then
    echo "installing the load generators (Debian packages wrk and hey)..." >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk hey >/dev/null
fi
cargo build --release --locked --bin palisade >&2
exec python3 bench/proxy.py --palisade target/release/palisade "$@"
