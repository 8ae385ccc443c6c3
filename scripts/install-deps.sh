#!/usr/bin/env bash
#! Installs everything the test suite needs on a fresh Debian 12 machine, idempotently:
#! OpenSSH server and client, sudo, the reference age CLI, and the lab's qemu/debootstrap.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: run as root (apt-get needs it): sudo bash $0" >&2
    exit 1
fi
packages=(openssh-server openssh-client sudo age procps)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The test sshd processes are started by the tests themselves; the system one is not needed.
mkdir -p /run/sshd
bash scripts/install-lab-deps.sh
