#!/usr/bin/env bash
# Screenshot an HTML report with headless Chromium:
#   scripts/report-screenshot.sh HTML_FILE PNG_FILE
# Installs Debian's `chromium` with apt-get when /usr/bin/chromium is missing
# (non-interactive; through sudo only when not root). Set WINDOW_SIZE to change the
# viewport (default 1280,2400).
set -euo pipefail

if [ "$#" -ne 2 ]; then
    echo "usage: $0 HTML_FILE PNG_FILE" >&2
    exit 2
fi
html=$1
png=$2
if [ ! -f "$html" ]; then
    echo "error: \`$html\` is not a file; write a report first (palisade audit report --format html --out FILE)" >&2
    exit 2
fi

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "error: /usr/bin/chromium is missing and neither root nor sudo is available to install it" >&2
        exit 1
    fi
    echo "installing chromium with apt-get" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

abs_html=$(cd "$(dirname "$html")" && pwd)/$(basename "$html")
case "$png" in
    /*) abs_png=$png ;;
    *) abs_png=$(pwd)/$png ;;
esac

/usr/bin/chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size="${WINDOW_SIZE:-1280,2400}" --screenshot="$abs_png" "file://$abs_html" 2>/dev/null
echo "wrote $abs_png" >&2
