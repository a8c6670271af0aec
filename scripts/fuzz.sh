#!/usr/bin/env bash
# A bounded fuzz run of what attackers feed CloudOS (issue 16), a few minutes in all; not
# part of scripts/test.sh (whose normal run keeps a few hundred cases of each):
#   - the tar unpacker: random and adversarial layers (symlink swaps, `..`, hard links
#     out, long names, PAX records, whiteouts, bombs, flipped bytes), host tree unchanged;
#   - the master's JSON inputs: random and mutated bodies POSTed to every JSON route of a
#     real master over TLS, no 5xx, the master still serving afterwards;
#   - the token, CA pin, TTL and identity parsers: no panic, short errors.
# Prints a Markdown table for docs/testing.md (Fuzz and property runs). Debug builds: the release
# profile (LTO, one codegen unit) takes longer to build than the runs take.
#
#   scripts/fuzz.sh [SCALE]     SCALE multiplies the case counts (default 1)
set -euo pipefail
export PATH=$PATH:$HOME/.cargo/bin
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCALE=${1:-1}

run() { # name cases cargo-args...
    local name=$1 cases=$2
    shift 2
    local start end out
    start=$(date +%s)
    out=$(CLOUDOS_FUZZ_CASES=$cases cargo test --locked -q "$@" -- --nocapture 2>&1) || {
        echo "$out" >&2
        echo "fuzz.sh: $name FAILED" >&2
        exit 1
    }
    end=$(date +%s)
    printf '| %s | %s | %s s | 0 |\n' "$name" "$cases" "$((end - start))"
}

echo "==> building the fuzz targets" >&2
cargo test --locked -q --no-run -p cloudos-oci --test unpack_fuzz \
    -p cloudos-master --test api_fuzz -p cloudos-cluster --test parser_fuzz >&2

echo "| target | cases | time | crashes |"
echo "|---|---|---|---|"
run "tar unpacker" $((10000 * SCALE)) -p cloudos-oci --test unpack_fuzz
run "master JSON inputs (TLS, real master)" $((3000 * SCALE)) -p cloudos-master --test api_fuzz
run "token, pin, TTL, identity parsers" $((100000 * SCALE)) -p cloudos-cluster --test parser_fuzz
