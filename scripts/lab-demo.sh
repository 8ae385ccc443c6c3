#!/usr/bin/env bash
#! The main job on the built-in local lab: installs what it needs, boots bare Debian VMs
#! under qemu (storage-1, manager-1, worker-1), provisions the whole swarm with the demo
#! stack using the built-in swarm playbook, re-runs it (nothing to change), and prints
#! how to reach the stack. PLAYBOOK (env) runs another playbook instead.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/as-root.sh
. scripts/as-root.sh
as_root "$@"
bash scripts/install-deps.sh
cargo build --locked --release -p provision
bin=$PWD/target/release/provision
lab_dir="${PROVISION_LAB_DIR:-$PWD/.lab/demo}"
export PROVISION_LAB_DIR="$lab_dir"
# Re-running the script reuses a lab whose VMs all answer; a broken one is rebuilt.
if "$bin" lab status >/dev/null 2>&1; then
  echo "reusing the running lab in $lab_dir"
else
  "$bin" lab down >/dev/null 2>&1 || true
  "$bin" lab up
fi
args=()
if [ -n "${PLAYBOOK:-}" ]; then args=(--playbook "$PLAYBOOK"); fi
"$bin" run "$lab_dir/cluster.toml" "${args[@]}"
echo
echo "A second run converges with nothing to change:"
"$bin" run "$lab_dir/cluster.toml" "${args[@]}"
echo
echo "The demo stack answers on port 8080 of every swarm node (routing mesh):"
"$bin" lab ssh worker-1 -- curl -fsS http://10.10.0.12:8080/
echo
echo "The swarm as day-2 commands see it:"
"$bin" status "$lab_dir/cluster.toml"
echo
echo "From this machine: $bin lab ssh manager-1 -- curl -s http://10.10.0.13:8080/"
echo "Look around: $bin lab ssh manager-1 -- docker node ls ; remove the lab: $bin lab down"
