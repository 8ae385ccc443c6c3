#!/usr/bin/env bash
#! The main job on the built-in local lab: installs what it needs, boots bare Debian VMs
#! under qemu (storage-1, manager-1, worker-1), then provisions them with `provision run`.
#! PLAYBOOK (env) picks the playbook; the lab's cluster.toml is left in the lab directory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --locked --release -p provision
bin=target/release/provision
lab_dir="${PROVISION_LAB_DIR:-$PWD/.lab/demo}"
export PROVISION_LAB_DIR="$lab_dir"
"$bin" lab up
playbook="${PLAYBOOK:-playbooks/base.toml}"
"$bin" run "$lab_dir/cluster.toml" --playbook "$playbook"
echo
echo "A second run converges with nothing to change:"
"$bin" run "$lab_dir/cluster.toml" --playbook "$playbook"
echo
echo "The lab is still up: '$bin lab ssh manager-1' to look around, '$bin lab down' to remove it."
