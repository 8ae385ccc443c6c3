#!/usr/bin/env bash
#! Installs everything the test suite needs on a fresh Debian 12 machine, idempotently:
#! OpenSSH server and client, sudo, the reference age CLI, iproute2, and the lab's qemu/debootstrap.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/as-root.sh
. scripts/as-root.sh
as_root "$@"
if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: no cargo on PATH: install Rust with rustup (https://rustup.rs), then run this again" >&2
    exit 1
fi
# iproute2: `ip netns` for the tier-2 test on ::1 in a namespace of its own.
packages=(openssh-server openssh-client sudo age procps iproute2)
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
