#!/usr/bin/env bash
#! Sourced by the README's scripts: `as_root "$@"` re-runs the calling script as root when it is
#! not, through sudo, keeping the caller's Rust toolchain; the files it makes in the checkout
#! are given back to the caller when it ends. The callers have already changed to the checkout. Root is needed for apt-get, for debootstrap (the
#! lab's base image) and for the real sshd servers of the tests.

# as_root ARGS...: returns when already root; else execs the script again under sudo.
as_root() {
    if [ "$(id -u)" = 0 ]; then
        # Started through sudo by a user: what the run makes in the checkout stays theirs. Only
        # the outermost script gives it back (the variable is not passed to the scripts it runs).
        if [ -n "${PROVISION_CALLER:-}" ]; then
            provision_caller="$PROVISION_CALLER"
            unset PROVISION_CALLER
            trap 'give_back "$provision_caller"' EXIT
        fi
        return 0
    fi
    if ! command -v sudo >/dev/null 2>&1; then
        echo "$(basename "$0"): needs root (apt-get, debootstrap, sshd): run it as root, or install sudo" >&2
        exit 1
    fi
    local cargo
    cargo=$(command -v cargo || true)
    echo "$(basename "$0"): re-running as root through sudo (apt-get, debootstrap and the test sshd need it)" >&2
    # sudo resets PATH and HOME: pass the caller's toolchain on explicitly.
    exec sudo env \
        PATH="$PATH${cargo:+:$(dirname "$cargo")}" \
        CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" \
        RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" \
        PROVISION_CALLER="$(id -u):$(id -g)" \
        ${PROVISION_LAB_DIR:+PROVISION_LAB_DIR="$PROVISION_LAB_DIR"} \
        ${PLAYBOOK:+PLAYBOOK="$PLAYBOOK"} \
        bash "$PWD/scripts/$(basename "$0")" "$@"
}

# give_back UID:GID: the checkout's build and lab directories back to the user who ran sudo.
give_back() {
    local d
    for d in target .lab; do
        if [ -e "$d" ]; then chown -R "$1" "$d" 2>/dev/null || true; fi
    done
}
