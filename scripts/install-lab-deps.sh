#!/usr/bin/env bash
#! Installs the programs `provision lab` needs (qemu, qemu-img, debootstrap, mkfs.ext4, ssh, and
#! apt-cacher-ng for its package cache) on Debian, idempotently.
#
# Run as root on Debian 12 (bookworm) or later; CI calls it before the lab tests.
# On bookworm, qemu-system-x86 comes from bookworm-backports: machines of this project already
# carry qemu-utils from there, and bookworm's own qemu-system-x86 conflicts with it.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "install-lab-deps: run as root (apt-get needs it)" >&2
    exit 1
fi

# shellcheck disable=SC1091
. /etc/os-release
codename="${VERSION_CODENAME:-}"

# gpgv and debian-archive-keyring let debootstrap check the mirror's signatures. apt-cacher-ng
# is the lab's package cache; the lab starts its own copy, on loopback, only while VMs run.
packages=(qemu-system-x86 qemu-utils debootstrap e2fsprogs openssh-client gpgv debian-archive-keyring apt-cacher-ng)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-lab-deps: all present (${packages[*]})"
    exit 0
fi
echo "install-lab-deps: installing ${missing[*]}"

export DEBIAN_FRONTEND=noninteractive
backports=()
if [ "$codename" = bookworm ]; then
    # Add the backports source once; any existing line naming bookworm-backports counts.
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        cat >/etc/apt/sources.list.d/bookworm-backports.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        echo "install-lab-deps: added /etc/apt/sources.list.d/bookworm-backports.sources"
    fi
    backports=(-t bookworm-backports)
fi

apt-get update -q
# qemu from one suite only: the system emulator must match qemu-utils and its own data files.
# No recommends: the lab boots with -kernel and NICs without option ROMs, so no GUI or iPXE.
apt-get install -y -q --no-install-recommends "${backports[@]}" qemu-system-x86 qemu-utils
apt-get install -y -q --no-install-recommends debootstrap e2fsprogs openssh-client gpgv debian-archive-keyring apt-cacher-ng
# The package starts a system-wide proxy on port 3142 for everyone; the lab needs none of it.
if [ -d /run/systemd/system ]; then
    systemctl disable --now apt-cacher-ng >/dev/null 2>&1 || true
fi
echo "install-lab-deps: done"
