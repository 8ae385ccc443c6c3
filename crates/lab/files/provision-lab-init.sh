#!/bin/sh
# provision-lab-init: runs at every boot of a lab VM, before networking and sshd, and turns this
# copy of the shared base image into a distinct bare server (the image itself has no host keys,
# no machine-id, no key and no private address). Installed by `provision lab`'s image recipe.
set -u
set -f # the kernel command line is split on spaces, never globbed

ip=""
key=""
aptproxy=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        lab.ip=*) ip="${arg#lab.ip=}" ;;
        lab.sshkey=*) key="${arg#lab.sshkey=}" ;;
        lab.aptproxy=*) aptproxy="${arg#lab.aptproxy=}" ;;
    esac
done

# Host keys are made here, once per VM. What `ssh-keygen -A` makes minus RSA, whose 3072-bit key
# takes 25-40 s under TCG; sshd quietly skips a missing default key, and clients use ed25519.
for t in ed25519 ecdsa; do
    [ -f "/etc/ssh/ssh_host_${t}_key" ] || ssh-keygen -q -t "$t" -N '' -f "/etc/ssh/ssh_host_${t}_key"
done

# The private network on eth1; networking.service (ordered after this unit) brings it up.
if [ -n "$ip" ]; then
    printf 'auto eth1\niface eth1 inet static\n    address %s\n' "$ip" >/etc/network/interfaces.d/provision-lab-eth1
fi

# The lab's package cache (an apt-cacher-ng on the host, seen through qemu's NAT): each package
# is downloaded once per machine. HTTPS sources (Docker's) go direct, since the cache cannot
# look into them, and so does a mirror on the host itself (PROVISION_LAB_MIRROR on 127.0.0.1).
# Without a cache this boot, an earlier boot's setting is removed.
proxyconf=/etc/apt/apt.conf.d/00provision-lab-proxy
if [ -n "$aptproxy" ]; then
    printf 'Acquire::http::Proxy "%s";\nAcquire::http::Proxy::10.0.2.2 "DIRECT";\nAcquire::https::Proxy "DIRECT";\n' \
        "$aptproxy" >"$proxyconf"
else
    rm -f "$proxyconf"
fi

# The lab's public key, passed as type:base64; root logs in with it (never with a password).
if [ -n "$key" ]; then
    line="${key%%:*} ${key#*:} provision-lab"
    mkdir -p /root/.ssh
    chmod 700 /root/.ssh
    touch /root/.ssh/authorized_keys
    chmod 600 /root/.ssh/authorized_keys
    grep -qxF "$line" /root/.ssh/authorized_keys || printf '%s\n' "$line" >>/root/.ssh/authorized_keys
fi

# The host keys go to the serial console, which only the lab's owner reads on the host: the lab
# pins them from there instead of trusting the first network connection.
if [ -w /dev/ttyS0 ]; then
    n=0
    set +f
    for f in /etc/ssh/ssh_host_*_key.pub; do
        read -r t k _ <"$f"
        printf '\nprovision-lab-hostkey: %s %s\n' "$t" "$k" >/dev/ttyS0
        n=$((n + 1))
    done
    printf '\nprovision-lab-hostkeys-done: %s\n' "$n" >/dev/ttyS0
fi
exit 0
