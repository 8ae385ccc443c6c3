#!/usr/bin/env bash
#! The whole test suite: installs what it needs, then runs every tier.
#! Tier 1 (unit, fake transport) and tier 2 (real sshd on 127.0.0.1) are plain tests;
#! tier 3 (real Debian VMs under qemu) is #[ignore]d for the quick loop and run here,
#! one VM test at a time. Style gates (fmt, clippy) run first: they are cheap.
#! At the end: a table of wall times, per tier and per VM test (CI's log shows it).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/as-root.sh
. scripts/as-root.sh
as_root "$@"

# The VM tests, one at a time: the bare lab itself, bare VMs to a swarm (the product's main
# promise), then day-2 work from the ready image layer (built once per key, then cached).
# Measured: run side by side, swarm_lab and day2_lab took as long as one after the other
# (2013 s against 840 s + ~1190 s): the VMs are CPU-bound under TCG on 2 cores.
TIER3=("provision-lab lab_vm" "provision-e2e swarm_lab" "provision-e2e day2_lab" "provision-e2e appwrite_lab")

times=()
total_start=$(date +%s)
timed() { # timed LABEL COMMAND...: runs it, records its wall time, fails the suite if it fails
    local label="$1" start rc
    shift
    start=$(date +%s)
    set +e
    "$@"
    rc=$?
    set -e
    times+=("$label|$(($(date +%s) - start))|$rc")
    if [ "$rc" -ne 0 ]; then
        report
        echo "test.sh: FAILED: $label (exit $rc)" >&2
        exit "$rc"
    fi
}
report() {
    local row label secs rc
    echo
    echo "== wall time per tier and VM test =="
    printf '%-34s %9s  %s\n' "what" "seconds" "result"
    for row in "${times[@]}"; do
        IFS='|' read -r label secs rc <<<"$row"
        printf '%-34s %9s  %s\n' "$label" "$secs" "$([ "$rc" = 0 ] && echo ok || echo "FAILED ($rc)")"
    done
    printf '%-34s %9s\n' "total" "$(($(date +%s) - total_start))"
}

timed "install dependencies" bash scripts/install-deps.sh
# Every remote command of the tier-2 tests starts root's login shell; on machines
# whose ~/.bashrc runs `pyenv init`, a shim lock left by a killed process makes each
# of them wait for it. Nothing else runs yet, so a lock now can only be stale.
rm -f "${HOME:-/root}/.pyenv/shims/.pyenv-shim"
timed "fmt" cargo fmt --all --check
timed "clippy (builds everything)" cargo clippy --locked --workspace --all-targets -- -D warnings
timed "tiers 1-2 (unit, real sshd)" cargo test --locked --workspace

# Every #[ignore]d test must be one of these: a new VM test not listed here would not run.
listed=$(cargo test -q --locked --workspace -- --ignored --list 2>/dev/null | grep -c ': test$' || true)
if [ "$listed" != "${#TIER3[@]}" ]; then
    echo "test.sh: $listed ignored (tier 3) tests exist but TIER3 lists ${#TIER3[@]}: add the new one" >&2
    exit 1
fi

# The test executables of the workspace build above (no rebuild: same features), by name.
executables=$(cargo test --locked --workspace --no-run 2>&1 | sed -n 's/^ *Executable .*(\(.*\))$/\1/p')
exe_of() { # exe_of TEST: its executable
    local e
    e=$(grep -E "/$1-[0-9a-f]+$" <<<"$executables" | head -n1)
    [ -n "$e" ] || { echo "test.sh: no executable for test $1" >&2; exit 1; }
    echo "$PWD/$e"
}
# run_vm_test PACKAGE TEST: from the package's directory, as cargo would; lines prefixed.
run_vm_test() {
    local package="$1" test="$2" exe dir
    exe=$(exe_of "$test")
    dir=$(cargo metadata --locked --no-deps --format-version 1 |
        python3 -c "import json,sys,os; print(next(os.path.dirname(p['manifest_path']) for p in json.load(sys.stdin)['packages'] if p['name']=='$package'))")
    (cd "$dir" && "$exe" --ignored --nocapture) 2>&1 | sed -u "s/^/[$test] /"
    return "${PIPESTATUS[0]}"
}

for t in "${TIER3[@]}"; do
    read -r package test <<<"$t"
    timed "tier 3: $test" run_vm_test "$package" "$test"
done
report
