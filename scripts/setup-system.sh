#!/usr/bin/env bash
# Installs the Debian packages the test suite needs. Called by the Makefile before the venv is
# built. As root it runs apt-get (update once, then install what is missing); otherwise it
# prints the command to run. The list grows as services (mosquitto, postgresql, influxdb,
# chromium) come into the tests.
set -euo pipefail

# MQTT broker; the cloud store; time series; the headless browser the dashboard tests drive
# (Playwright runs Debian's /usr/bin/chromium: no browser download)
APT_PACKAGES=(mosquitto postgresql influxdb chromium)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-system: missing Debian packages: ${missing[*]}" >&2
    echo "setup-system: run as root: apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "setup-system: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
