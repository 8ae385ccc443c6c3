#!/bin/sh
# provision-lab-wipe: the last command in a lab image layer's builder VM, before its disk is
# kept as a layer. It removes everything that made the builder one particular server, so every
# VM booted from the layer is as distinct as one booted from the bare image. Lab only.
set -eu
# Installed, not running: each VM's run enables and starts what its roles need (the bare path
# does the same), and no daemon writes state after this point.
systemctl disable --now docker.service docker.socket nfs-server.service >/dev/null 2>&1 || true
systemctl stop containerd.service >/dev/null 2>&1 || true
# Docker's identity and any swarm state (the builder never joins one; removed to be sure).
rm -rf /var/lib/docker/swarm /var/lib/docker/engine-id /etc/docker/key.json \
    /var/lib/docker/network/files/local-kv.db
# The machine's identity: machine-id (systemd makes a new one at first boot), SSH host keys
# (the lab's first-boot unit makes them), host name, DHCP leases, the builder's login key and
# private address and package cache, provision's own state on the host.
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id /etc/ssh/ssh_host_* /var/lib/dhcp/*.leases \
    /root/.ssh/authorized_keys /etc/network/interfaces.d/provision-lab-eth1 \
    /etc/apt/apt.conf.d/00provision-lab-proxy
echo debian >/etc/hostname
rm -rf /var/lib/provision
# Logs and caches: nothing of the build is left to read or to take space.
apt-get clean
journalctl --rotate >/dev/null 2>&1 || true
rm -rf /var/log/journal/* /tmp/* /var/tmp/*
find /var/log -type f -delete
sync
echo "provision-lab-wipe: done"
# Power off from here: with its host keys gone, sshd takes no new connection.
systemctl --no-block poweroff >/dev/null 2>&1
