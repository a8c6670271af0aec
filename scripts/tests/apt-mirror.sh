#!/usr/bin/env bash
# Tests of scripts/lib/apt-mirror.sh: sample apt configurations in a temporary
# directory, the mirror each one yields, and the failure when none has one.
# Run by scripts/test.sh; needs nothing but bash and awk. The URIs are made up
# (.test names): the repository names no package mirror.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$ROOT/scripts/lib/apt-mirror.sh"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
unset CLOUDOS_DEBIAN_MIRROR
passed=0
failed=0

# case NAME EXPECTED: runs debian_mirror bookworm on $TMP/NAME; EXPECTED is a
# URI, or `error` for a failure whose message names the setting.
case_() {
    local name=$1 want=$2 got err
    if got=$(debian_mirror bookworm "$TMP/$name" 2>"$TMP/stderr"); then
        err=
    else
        err=$(cat "$TMP/stderr")
        got=error
    fi
    if [[ $got == "$want" && ( $want != error || $err == *CLOUDOS_DEBIAN_MIRROR* ) ]]; then
        passed=$((passed + 1))
    else
        echo "FAIL $name: want $want, got $got${err:+ ($err)}" >&2
        failed=$((failed + 1))
    fi
}

# etc NAME FILE: writes stdin to $TMP/NAME/FILE.
etc() { mkdir -p "$(dirname "$TMP/$1/$2")"; cat >"$TMP/$1/$2"; }

etc one-line sources.list <<'EOF'
# deb http://commented.test/debian bookworm main
deb-src http://src.test/debian bookworm main
deb http://security.test/debian-security bookworm-security main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://one.test/debian bookworm main contrib
deb http://later.test/debian bookworm main
EOF
case_ one-line http://one.test/debian

etc options-with-spaces sources.list <<'EOF'
deb [ arch=amd64 ] http://spaced.test/debian bookworm main
EOF
case_ options-with-spaces http://spaced.test/debian

etc cdrom sources.list <<'EOF'
deb cdrom:[Debian GNU/Linux 12 _Bookworm_ - Official amd64 NETINST]/ bookworm main
deb http://after-cdrom.test/debian bookworm main
EOF
case_ cdrom http://after-cdrom.test/debian

# The host of this project's machines: deb822 only, the suite among others, and
# the security archive in a stanza of its own.
etc deb822 sources.list.d/debian.sources <<'EOF'
Types: deb
# a comment inside the stanza
URIs: http://deb822.test/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb822.test/debian-security
Suites: bookworm-security
Components: main
EOF
case_ deb822 http://deb822.test/debian

etc deb822-skips sources.list.d/a.sources <<'EOF'
Types: deb
URIs: http://disabled.test/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb-src
URIs: http://src.test/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://other-suite.test/debian
Suites: trixie
Components: main

types: deb-src deb
uris:
 http://continued.test/debian
 http://second.test/debian
suites: bookworm
components: main
EOF
case_ deb822-skips http://continued.test/debian

# apt's order: sources.list first, then sources.list.d by name, either format;
# names apt ignores (*.disabled, *.save) are passed over.
etc order sources.list <<'EOF'
deb http://main-list.test/debian trixie main
EOF
etc order sources.list.d/00-off.list.disabled <<'EOF'
deb http://disabled-file.test/debian bookworm main
EOF
etc order sources.list.d/10-first.sources <<'EOF'
Types: deb
URIs: http://first-by-name.test/debian
Suites: bookworm
Components: main
EOF
etc order sources.list.d/20-second.list <<'EOF'
deb http://second-by-name.test/debian bookworm main
EOF
case_ order http://first-by-name.test/debian

# No mirror for the suite: a clear failure, not a guess.
etc none sources.list <<'EOF'
deb http://other.test/debian trixie main
EOF
etc none sources.list.d/nodesource.sources <<'EOF'
Types: deb
URIs: http://third-party.test/node
Suites: nodistro
Components: main
EOF
case_ none error
mkdir -p "$TMP/empty"
case_ empty error

# The setting wins over the host's sources.
if got=$(CLOUDOS_DEBIAN_MIRROR=http://setting.test/debian debian_mirror bookworm "$TMP/one-line") &&
    [[ $got == http://setting.test/debian ]]; then
    passed=$((passed + 1))
else
    echo "FAIL setting: got ${got:-nothing}" >&2
    failed=$((failed + 1))
fi

echo "apt-mirror: $passed passed, $failed failed"
[[ $failed == 0 ]]
