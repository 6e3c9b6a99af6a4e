#!/usr/bin/env bash
# Installs every build and test dependency of keycast from Debian 12 packages.
# Idempotent: when everything is present it prints one line and exits.
set -euo pipefail

PKGS=(
  build-essential cmake meson ninja-build pkg-config git ccache
  dpdk dpdk-dev libdpdk-dev dpdk-doc
  libipsec-mb-dev
  libboost-program-options-dev libboost-system-dev libboost-dev
  libssl-dev openssl
  libsqlite3-dev sqlite3
  libpq-dev postgresql
  libgtest-dev libgmock-dev libbenchmark-dev
  libpcap-dev
  tshark python3-scapy python3 python3-cryptography iproute2 tcpdump procps
  clang libclang-rt-14-dev
  gnuplot-nox
  libsystemd-dev nlohmann-json3-dev prometheus
  help2man
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PKGS[@]} packages already installed"
  exit 0
fi

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer once, non-interactively.
echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
