#!/bin/sh
# CloudOS installer: makes a Linux machine with systemd (a cloud VM, a laptop) a CloudOS
# node. Served by every master, so it needs no internet. `cloudos token create` prints the
# line that runs it (one line, as root; put sudo in front otherwise):
#
#   sh -c 's=$(curl -fsSk https://MASTER:PORT/install.sh) || exit; h=$(printf "%s\n" "$s" |
#   sha256sum); [ "$h" = "<sha256 of this script>  -" ] || { echo "…" >&2; exit 1; };
#   sh -c "$s" cloudos-install "$@"' cloudos-install --master MASTER:PORT --token TOKEN
#
# The chain of trust, link by link (a man in the middle can change any byte on the wire):
# - This script: fetched with -k (the host has nothing to verify the master with yet), so
#   the line pins it instead: it holds the script's SHA-256 (the CLI read the script from
#   the master over the admin's verified connection) and runs the script only if the bytes
#   match, else says so and runs nothing. The pin is on the script, not on the master's
#   serving key (`curl --pinnedpubkey`): the master makes a new key at every start and
#   address change, and would break every line printed before. The script is the same bytes
#   from every master of a version, so it has no per-request parts.
# - The CA: fetched with -k, then accepted only if ca.pem is exactly one PEM certificate
#   and nothing else, and that certificate's public key matches the pin inside the token.
#   One certificate only, because `curl --cacert` trusts every certificate OpenSSL finds in
#   the file (any extra CERTIFICATE, TRUSTED CERTIFICATE or X509 CERTIFICATE block).
# - Everything after: TLS 1.3 verified against that one CA and nothing else (--capath to
#   an empty directory: curl keeps the system's CA directory next to --cacert otherwise;
#   -q: no ~/.curlrc), no redirects; SHA256SUMS from there, and each binary must match its
#   digest. A mismatch stops the install with nothing installed.
#
# Options: run with --help (or read usage below).
#
# Needs: root, systemd, curl, and coreutils/awk (present on every Debian and Ubuntu).
set -eu

say() { echo "cloudos-install: $*" >&2; }
die() {
    echo "cloudos-install: error: $*" >&2
    exit 1
}
usage() {
    cat >&2 <<'USAGE'
usage: sh install.sh [options]   (or the line `cloudos token create` prints, options
                                  appended to it)

Options (each also as an environment variable, k3s style):
  --role compute|master   CLOUDOS_ROLE        default compute
  --token TOKEN           CLOUDOS_TOKEN       join token (compute), from `cloudos token create`
  --master HOST:PORT      CLOUDOS_MASTER      the master (the printed line gives it)
  --name NAME             CLOUDOS_NAME        node name, default the host name
  --labels K=V,...        CLOUDOS_LABELS      labels for scheduling
  --cluster-name NAME     CLOUDOS_CLUSTER_NAME  the new cluster's name (master)
  --insecure-registry H:P CLOUDOS_INSECURE_REGISTRIES  registries over plain HTTP (comma list)
  --tls-san NAME|IP       CLOUDOS_TLS_SAN     master: more names for its certificate (comma
                                              list), e.g. its public IP behind NAT
  --dry-run               CLOUDOS_DRY_RUN=1   check and download, then say what would be done
  --uninstall             CLOUDOS_UNINSTALL=1 remove CloudOS from this host
A master (--role master) comes from CLOUDOS_DOWNLOAD_URL, a directory holding
nodeos-<arch> and SHA256SUMS (https:// or file://); CLOUDOS_DOWNLOAD_SHA256 pins the
binary's digest instead of that list.

USAGE
}

ROLE=${CLOUDOS_ROLE:-compute}
TOKEN=${CLOUDOS_TOKEN:-}
MASTER=${CLOUDOS_MASTER:-}
NAME=${CLOUDOS_NAME:-}
LABELS=${CLOUDOS_LABELS:-}
CLUSTER_NAME=${CLOUDOS_CLUSTER_NAME:-}
INSECURE=${CLOUDOS_INSECURE_REGISTRIES:-}
TLS_SAN=${CLOUDOS_TLS_SAN:-}
DRY_RUN=${CLOUDOS_DRY_RUN:-}
UNINSTALL=${CLOUDOS_UNINSTALL:-}
DOWNLOAD_URL=${CLOUDOS_DOWNLOAD_URL:-}
DOWNLOAD_SHA256=${CLOUDOS_DOWNLOAD_SHA256:-}

value() { # option name, remaining argument count, next argument
    [ "$2" -ge 2 ] || die "$1 needs a value (see --help)"
}
while [ $# -gt 0 ]; do
    case $1 in
    --role) value "$1" $#; ROLE=$2; shift 2 ;;
    --role=*) ROLE=${1#*=}; shift ;;
    --token) value "$1" $#; TOKEN=$2; shift 2 ;;
    --token=*) TOKEN=${1#*=}; shift ;;
    --master) value "$1" $#; MASTER=$2; shift 2 ;;
    --master=*) MASTER=${1#*=}; shift ;;
    --name) value "$1" $#; NAME=$2; shift 2 ;;
    --name=*) NAME=${1#*=}; shift ;;
    --labels) value "$1" $#; LABELS=$2; shift 2 ;;
    --labels=*) LABELS=${1#*=}; shift ;;
    --cluster-name) value "$1" $#; CLUSTER_NAME=$2; shift 2 ;;
    --cluster-name=*) CLUSTER_NAME=${1#*=}; shift ;;
    --insecure-registry) value "$1" $#; INSECURE=${INSECURE:+$INSECURE,}$2; shift 2 ;;
    --insecure-registry=*) INSECURE=${INSECURE:+$INSECURE,}${1#*=}; shift ;;
    --tls-san) value "$1" $#; TLS_SAN=${TLS_SAN:+$TLS_SAN,}$2; shift 2 ;;
    --tls-san=*) TLS_SAN=${TLS_SAN:+$TLS_SAN,}${1#*=}; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done
case $DRY_RUN in 0 | false | no) DRY_RUN= ;; esac
case $UNINSTALL in 0 | false | no) UNINSTALL= ;; esac

# --- the host ------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "this must run as root: it installs a system service. Run the line again with sudo in front"
if [ ! -d /run/systemd/system ]; then
    init=$(cat /proc/1/comm 2>/dev/null || echo unknown)
    die "systemd is not running on this host (PID 1 is $init); CloudOS installs as a systemd service"
fi

if [ -n "$UNINSTALL" ]; then
    if [ -x /usr/local/bin/cloudos-uninstall.sh ]; then
        exec /usr/local/bin/cloudos-uninstall.sh
    fi
    say "CloudOS is not installed on this host (no /usr/local/bin/cloudos-uninstall.sh); nothing to do"
    exit 0
fi

case $(uname -m) in
x86_64 | amd64) ARCH=x86_64 ;;
aarch64 | arm64) ARCH=aarch64 ;;
*) die "this host is $(uname -m); CloudOS runs on x86_64 and aarch64" ;;
esac
case $(stat -fc %T /sys/fs/cgroup 2>/dev/null || true) in
cgroup2fs) CGROUP=v2 ;;
tmpfs) CGROUP=v1 ;;
*) die "no cgroup hierarchy is mounted at /sys/fs/cgroup; containers need one" ;;
esac
for tool in curl sha256sum od awk base64 mktemp head tail; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing; install it first (apt-get install curl coreutils)"
done
say "host: $ARCH, systemd, cgroup $CGROUP"
[ "$CGROUP" = v2 ] || say "warning: cgroup v1 host: containers get their own cgroups under /sys/fs/cgroup/*/cloudos, not the unit's slice"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cloudos-install.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

# --- trust ---------------------------------------------------------------------------

# Whether PEM file $1 is exactly one certificate and nothing else: one CERTIFICATE block of
# base64 lines, blank lines after it at most. Anything more (a second block of any label,
# text OpenSSL might read, a CR) is refused rather than understood.
one_certificate() {
    awk 'state == 0 && $0 == "-----BEGIN CERTIFICATE-----" { state = 1; next }
         state == 1 && $0 ~ "^[A-Za-z0-9+/]+=*$" { lines++; next }
         state == 1 && $0 == "-----END CERTIFICATE-----" && lines > 0 { state = 2; next }
         state == 2 && $0 == "" { next }
         { bad = 1; exit }
         END { exit bad || state != 2 }' "$1"
}

# The sha256 (hex) of the SubjectPublicKeyInfo of the certificate in PEM file $1 (checked
# by one_certificate): the CA pin as the token carries it (kubeadm's scheme). The DER is
# walked by structure (Certificate > TBSCertificate > [version], serial, signature, issuer,
# validity, subject, then the SPKI), never searched for bytes, so a certificate cannot
# smuggle a copy of the right key somewhere else in it; the Certificate must span the whole
# DER, so nothing hides after it either.
spki_pin() {
    awk '/-----BEGIN CERTIFICATE-----/ { inside = 1; next }
         /-----END CERTIFICATE-----/ { exit }
         inside' "$1" | base64 -d >"$TMP/cert.der" 2>/dev/null || return 1
    range=$(od -An -v -tu1 "$TMP/cert.der" | awk '
        function header(pos,    first, count, i) {
            if (pos + 1 >= n) return 0
            TAG = b[pos]; first = b[pos + 1]
            if (first < 128) { LEN = first; HL = 2 }
            else {
                count = first - 128
                if (count < 1 || count > 4 || pos + 1 + count >= n) return 0
                LEN = 0
                for (i = 0; i < count; i++) LEN = LEN * 256 + b[pos + 2 + i]
                HL = 2 + count
            }
            return pos + HL + LEN <= n
        }
        { for (i = 1; i <= NF; i++) b[n++] = $i + 0 }
        END {
            p = 0
            if (!header(p) || TAG != 48 || HL + LEN != n) exit 1   # Certificate, all of it
            p += HL
            if (!header(p) || TAG != 48) exit 1     # TBSCertificate
            p += HL
            if (!header(p)) exit 1
            if (TAG == 160) p += HL + LEN           # [0] version
            for (k = 0; k < 5; k++) {               # serial .. subject
                if (!header(p)) exit 1
                p += HL + LEN
            }
            if (!header(p) || TAG != 48) exit 1     # SubjectPublicKeyInfo
            print p, HL + LEN
        }') || return 1
    # shellcheck disable=SC2086 # two numbers
    set -- $range
    tail -c +"$(($1 + 1))" "$TMP/cert.der" | head -c "$2" | sha256sum | cut -c1-64
}

# curl that trusts the pinned cluster CA and nothing else, TLS 1.3 only: -q skips any
# ~/.curlrc (an `insecure` there would undo this), and --capath points at an empty
# directory because curl otherwise keeps the system's CA directory (/etc/ssl/certs) next
# to --cacert, and any CA the host trusts for the web could then sign for the master.
mkdir "$TMP/capath"
verified() { curl -q -fsS --proto '=https' --tlsv1.3 --cacert "$TMP/ca.pem" --capath "$TMP/capath" "$@"; }

# Fetches $1 (a URL) to $2 with curl options from $3.., or dies saying what went wrong.
fetch() {
    url=$1 out=$2
    shift 2
    "$@" "$url" -o "$out" 2>"$TMP/curl.err" ||
        die "cannot fetch $url: $(tr '\n' ' ' <"$TMP/curl.err")"
}

# Checks that file $1 has the digest listed for name $2 in $TMP/SHA256SUMS (or $3).
check_digest() {
    want=${3:-$(awk -v f="$2" '$2 == f || $2 == "*" f { print $1; exit }' "$TMP/SHA256SUMS")}
    [ -n "$want" ] || die "no digest for $2 in SHA256SUMS"
    got=$(sha256sum "$1" | cut -c1-64)
    [ "$got" = "$want" ] ||
        die "$2 does not match its digest (got $got, expected $want): it was changed or damaged on the way or on the master; nothing was installed"
}

served() { awk '{ print $2 }' "$TMP/SHA256SUMS" | tr '\n' ' '; }

case $ROLE in
compute)
    [ -n "$TOKEN" ] || die "a join token is needed: --token TOKEN (create one on the master with 'cloudos token create')"
    [ -n "$MASTER" ] || die "which master? give --master HOST:PORT"
    case $TOKEN in
    cloudos1_*_*_*) ;;
    *) die "this is not a CloudOS join token (they look like cloudos1_<id>_<secret>_<64 hex digits>); copy the whole token from 'cloudos token create'" ;;
    esac
    PIN=${TOKEN##*_}
    case $PIN in *[!0-9a-f]*) die "the token's CA pin is not hex; it may have been cut when copying" ;; esac
    [ ${#PIN} -eq 64 ] || die "the token's CA pin has ${#PIN} hex digits, not 64; it may have been cut when copying"

    say "checking the master at $MASTER against the token's CA pin"
    fetch "https://$MASTER/install/ca.pem" "$TMP/ca.pem" curl -q -fsS --proto '=https' --tlsv1.3 -k
    if ! one_certificate "$TMP/ca.pem"; then
        blocks=$(grep -c -- '-----BEGIN' "$TMP/ca.pem" || true)
        die "the master at $MASTER sent a ca.pem that is not exactly one certificate ($blocks PEM blocks, or text around them): someone between this host and the master may be adding a CA of their own. Nothing was installed"
    fi
    got=$(spki_pin "$TMP/ca.pem") || die "the master at $MASTER sent no readable CA certificate"
    [ "$got" = "$PIN" ] ||
        die "the master at $MASTER is not the cluster this token is for: its CA pin is $got, the token expects $PIN. Check --master, or create the token on this master"

    fetch "https://$MASTER/install/SHA256SUMS" "$TMP/SHA256SUMS" verified
    grep -q " nodeos-$ARCH\$" "$TMP/SHA256SUMS" ||
        die "the master has no nodeos for $ARCH (it serves: $(served)); put nodeos-$ARCH in its downloads directory"
    say "downloading nodeos-$ARCH"
    fetch "https://$MASTER/install/nodeos-$ARCH" "$TMP/nodeos" verified
    check_digest "$TMP/nodeos" "nodeos-$ARCH"
    if grep -q " cloudos-$ARCH\$" "$TMP/SHA256SUMS"; then
        fetch "https://$MASTER/install/cloudos-$ARCH" "$TMP/cloudos" verified
        check_digest "$TMP/cloudos" "cloudos-$ARCH"
    fi
    ;;
master)
    [ -n "$DOWNLOAD_URL" ] ||
        die "--role master installs from CLOUDOS_DOWNLOAD_URL (a directory with nodeos-$ARCH and SHA256SUMS, https:// or file://)"
    case $DOWNLOAD_URL in
    https://* | file://*) ;;
    *) die "CLOUDOS_DOWNLOAD_URL must be https:// or file:// (got $DOWNLOAD_URL)" ;;
    esac
    DOWNLOAD_URL=${DOWNLOAD_URL%/}
    plain() { curl -fsSL --proto '=https,file' "$@"; }
    if [ -z "$DOWNLOAD_SHA256" ]; then
        fetch "$DOWNLOAD_URL/SHA256SUMS" "$TMP/SHA256SUMS" plain
    fi
    say "downloading nodeos-$ARCH from $DOWNLOAD_URL"
    fetch "$DOWNLOAD_URL/nodeos-$ARCH" "$TMP/nodeos" plain
    check_digest "$TMP/nodeos" "nodeos-$ARCH" "$DOWNLOAD_SHA256"
    ;;
*) die "--role is compute or master (got $ROLE)" ;;
esac

chmod 0755 "$TMP/nodeos"
"$TMP/nodeos" --version >/dev/null 2>&1 ||
    die "the downloaded nodeos does not run here (is $TMP on a noexec mount? set TMPDIR to another directory)"

set -- --role "$ROLE"
[ -z "$MASTER" ] || [ "$ROLE" != compute ] || set -- "$@" --master "$MASTER"
[ -z "$NAME" ] || set -- "$@" --name "$NAME"
[ -z "$LABELS" ] || set -- "$@" --labels "$LABELS"
[ -z "$CLUSTER_NAME" ] || set -- "$@" --cluster-name "$CLUSTER_NAME"
[ -z "$INSECURE" ] || set -- "$@" --insecure-registries "$INSECURE"
[ -z "$TLS_SAN" ] || set -- "$@" --tls-san "$TLS_SAN"
[ ! -f "$TMP/cloudos" ] || set -- "$@" --cli "$TMP/cloudos"
[ -z "$DRY_RUN" ] || set -- "$@" --dry-run

# The token goes through the environment: arguments are visible to every user in ps.
status=0
CLOUDOS_TOKEN=$TOKEN CLOUDOS_DRY_RUN= "$TMP/nodeos" install "$@" || status=$?
[ $status -eq 0 ] || die "nodeos install failed (exit $status); see its message above"
exit 0
