#!/usr/bin/env bash
# The project's test command (README "Set up"): formatting, lints, every test.
# `.ci/run` runs exactly this. It installs what the tests need and starts the local
# PostgreSQL when it is installed but stopped, so tests that use it do run.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if ((${#need_apt[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${need_apt[*]} for the cross-checks" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "note: ${need_apt[*]} missing and cannot be installed here; those checks will be skipped" >&2
    fi
fi

if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    for v in /etc/postgresql/*/; do
        pg_ctlcluster --skip-systemctl-redirect "$(basename "$v")" main start 2>/dev/null || true
    done
fi
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    export PALISADE_TEST_POSTGRES="${PALISADE_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}"
    echo "PostgreSQL at 127.0.0.1:5432: tests that use it will run" >&2
else
    echo "PostgreSQL not reachable at 127.0.0.1:5432: tests that need it will say SKIPPED" >&2
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# cargo's last line is the last crate's (often empty) doc-test run; end with the total.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
grep -E '^test result:' "$log" \
    | sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/' \
    | awk '{ p += $1; f += $2 } END { printf "total: %d passed, %d failed\n", p, f }'
exit "$status"
