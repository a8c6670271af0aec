# shellcheck shell=bash
# Tools built from source once and kept in the cache directory, which survives a clean
# clone (CI keeps it between runs), instead of cargo's own bin directory.
#
#   . scripts/lib/tools.sh; PATH=$(tools_bin):$PATH

# scripts/test.sh's check of the dependency tree (deny.toml).
CARGO_DENY_VERSION=0.20.2

# Where cargo-deny's root is (`cargo install --root`); its programs are under bin/.
tools_root() {
    echo "${CLOUDOS_CACHE:-$HOME/.cache/cloudos}/tools/cargo-deny-$CARGO_DENY_VERSION"
}

tools_bin() {
    echo "$(tools_root)/bin"
}
