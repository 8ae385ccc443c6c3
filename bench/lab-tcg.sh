#!/usr/bin/env bash
#! TCG tuning: boots one ready-layer lab VM under a variant of the lab's qemu command line and
#! times sshd-ready and six workloads inside it (bench/README.md, "TCG tuning").
#
# Usage: bench/lab-tcg.sh LABEL [SED_EXPR]
#   SED_EXPR is applied to every argument of the lab's own qemu argv, e.g.
#     's/^qemu64$/max/'                              the CPU model
#     's/^\(root=.*\)$/\1 mitigations=off/'           the kernel command line
#     's/^\(file=.*qcow2\)$/\1,cache=unsafe/'         the disk's cache mode
#     's/^1$/2/'                                      -smp 2 (the only argument that is "1")
# PROVISION names the binary (default: target/release/provision, else target/debug/provision).
# One line per run on stdout; run each variant twice or more and compare, on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
label=${1:?usage: bench/lab-tcg.sh LABEL [SED_EXPR]}
sedexpr=${2:-}
P=${PROVISION:-}
if [ -z "$P" ]; then
    for c in target/release/provision target/debug/provision; do
        if [ -x "$c" ]; then P=$c; break; fi
    done
fi
[ -n "$P" ] || { echo "lab-tcg: build provision first (cargo build --locked)" >&2; exit 1; }
dir=$(mktemp -d /tmp/provision-lab-tcg.XXXXXX)
trap '"$P" lab down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

# The lab boots the VM as it always does; then its qemu is replaced by the variant, same disk.
"$P" lab up --dir "$dir" --layer ready --storage 0 --managers 1 --workers 0 >/dev/null
pid=$(cat "$dir/manager-1.pid")
mapfile -d '' argv </proc/"$pid"/cmdline
kill "$pid"
while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
rm -f "$dir/manager-1.console"
variant=()
for a in "${argv[@]}"; do
    if [ -n "$sedexpr" ]; then a=$(printf '%s' "$a" | sed -e "$sedexpr"); fi
    variant+=("$a")
done

ms() { date +%s%3N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1000 }'; }
start=$(ms)
"${variant[@]}"
until "$P" lab ssh manager-1 --dir "$dir" -- true >/dev/null 2>&1; do sleep 0.5; done
boot=$(secs "$start" "$(ms)")
timed() {
    local s
    s=$(ms)
    "$P" lab ssh manager-1 --dir "$dir" -- "$1" >/dev/null 2>&1 || { echo "lab-tcg: failed: $1" >&2; exit 1; }
    secs "$s" "$(ms)"
}
fork=$(timed 'for i in $(seq 300); do /bin/true; done')
loop=$(timed 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done')
io=$(timed 'dd if=/dev/urandom of=/tmp/x bs=1M count=64 status=none; sha256sum /tmp/x; gzip -1 -c /tmp/x >/tmp/x.gz; sync')
files=$(timed 'mkdir -p /var/tmp/t && tar -C / -cf - usr/lib/x86_64-linux-gnu usr/share/perl 2>/dev/null | tar -C /var/tmp/t -xf - && sync && rm -rf /var/tmp/t && sync')
dockerd=$(timed 'systemctl start docker && docker info >/dev/null')
swarm=$(timed 'docker swarm init --advertise-addr 127.0.0.1 >/dev/null && docker network create -d overlay o1 && docker swarm leave --force')
printf '%-20s ssh-ready %6s fork300 %6s shloop %6s io %6s files %6s dockerd %6s swarm %6s\n' \
    "$label" "$boot" "$fork" "$loop" "$io" "$files" "$dockerd" "$swarm"
