#!/usr/bin/env bash
# Debian packages the test suite uses: espeak-ng (a second engine and stand-in recordings) and
# chromium (the web studio's browser tests; never a browser downloaded by a test tool).
# Installs what is missing when run as root; otherwise says what to install.
set -euo pipefail
need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v chromium >/dev/null || need+=(chromium)
((${#need[@]})) || exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing ${need[*]} (Debian packages)"
  apt-get -qq update >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends "${need[@]}" >/dev/null
else
  echo "Please install: ${need[*]} (the tests that need them are skipped without)" >&2
fi
