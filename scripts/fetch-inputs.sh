#!/usr/bin/env bash
# Download and unpack the pinned Debian inputs listed in image/packages.lock.
#
#   scripts/fetch-inputs.sh              download (if needed), verify sha256, unpack (once)
#   scripts/fetch-inputs.sh --arch A     the same for the entries of Debian arch A and `all`
#   scripts/fetch-inputs.sh --update     rewrite the lock from apt's current candidate versions
#   scripts/fetch-inputs.sh --dir PKG    print the unpacked directory of PKG (from the lock)
#
# A lock line may name a Debian component after the hash (default `main`), as
# `COMPONENT` or `SUITE/COMPONENT` (default suite: bookworm). A package from another
# component (raspi-firmware is in `non-free-firmware`, which the host's sources
# usually lack) or another suite (etcd-server from trixie) is fetched through a
# private apt configuration under the cache, from the mirror the host uses for
# bookworm: the host's sources and lists are never touched.
#
# Cache: ${CLOUDOS_CACHE:-$HOME/.cache/cloudos}
#   debs/<package>_<version>_<arch>.deb          (':' in a version is written '%3a', as apt does)
#   unpacked/<package>_<version>_<arch>/         (dpkg -x of that .deb, same '%3a' rule;
#                                                 for a kernel, depmod has been run on it)
#
# A .deb whose sha256 differs from the lock is deleted and the script fails.
# Arch `all` and the host's own arch work as is; another arch (e.g. arm64 on an
# amd64 host) needs `dpkg --add-architecture arm64 && apt-get update` first.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCK=${CLOUDOS_LOCK:-$ROOT/image/packages.lock}
CACHE=${CLOUDOS_CACHE:-$HOME/.cache/cloudos}
DEBS=$CACHE/debs
UNPACKED=$CACHE/unpacked

die() { echo "fetch-inputs: error: $*" >&2; exit 1; }

# Print "name arch version sha256 component" for each entry of the lock.
lock_entries() {
    [[ -f $LOCK ]] || die "lock file not found: $LOCK"
    awk '!/^[[:space:]]*(#|$)/ {
        if (NF != 4 && NF != 5) { print "bad line " NR ": " $0 > "/dev/stderr"; exit 1 }
        print $1, $2, $3, $4, (NF == 5 ? $5 : "main")
    }' "$LOCK"
}

# apt's package spec for an arch: `name` for all, `name:arch` otherwise.
apt_name() { if [[ $2 == all ]]; then echo "$1"; else echo "$1:$2"; fi; }

# File-system safe name for (name, version, arch).
stem() { echo "${1}_${3//:/%3a}_${2}"; }

APT_OPTS=(-qq)
# As root, apt drops to the `_apt` user to download and warns when it cannot write
# the target directory; the hash check below is what guards the file.
[[ $(id -u) == 0 ]] && APT_OPTS+=(-o APT::Sandbox::User=root)

# The images are built from Debian bookworm whatever the host runs. The private
# sources below use the host's bookworm mirror, or $CLOUDOS_DEBIAN_MIRROR.
DEBIAN_SUITE=bookworm
source "$ROOT/scripts/lib/apt-mirror.sh"

# Set OPTS to the apt options for a component: the host's own configuration for
# `main`, else a private sources list and state directory under the cache, whose
# lists are fetched on first use (or again with --update).
apt_opts() {
    local component=$1 refresh=${2:-} dir mirror suite=$DEBIAN_SUITE
    OPTS=("${APT_OPTS[@]}")
    [[ $component == main ]] && return 0
    if [[ $component == */* ]]; then
        suite=${component%%/*}
        component=${component#*/}
    fi
    dir=$CACHE/apt/$suite-$component
    OPTS+=(-o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache::Archives=$dir/archives")
    if [[ -n $refresh || ! -f $dir/.updated ]]; then
        mkdir -p "$dir/lists/partial" "$dir/archives/partial"
        [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] ||
            die "no Debian archive keyring: install debian-archive-keyring"
        mirror=$(debian_mirror "$DEBIAN_SUITE") || die "no mirror for the private $component source"
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite $component" \
            >"$dir/sources.list"
        apt-get "${OPTS[@]}" update || die "apt-get update of the private $component source failed"
        touch "$dir/.updated"
    fi
}

check_arch() {
    local arch=$1
    [[ $arch == all || $arch == "$(dpkg --print-architecture)" ]] && return 0
    dpkg --print-foreign-architectures | grep -qx "$arch" ||
        die "arch $arch is not enabled: run 'dpkg --add-architecture $arch && apt-get update'"
}

update_lock() {
    local tmp out name arch version sha component cand
    tmp=$(mktemp "$LOCK.XXXXXX")
    trap 'rm -f "$tmp"' EXIT
    while IFS= read -r line; do
        if [[ $line =~ ^[[:space:]]*(#|$) ]]; then
            printf '%s\n' "$line" >>"$tmp"
            continue
        fi
        read -r name arch version sha component <<<"$line"
        check_arch "$arch"
        apt_opts "${component:-main}" refresh
        cand=$(apt-cache "${OPTS[@]}" policy "$(apt_name "$name" "$arch")" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')
        [[ -n $cand && $cand != "(none)" ]] || die "no candidate version for $(apt_name "$name" "$arch")"
        out=$(apt-cache "${OPTS[@]}" show "$(apt_name "$name" "$arch")=$cand" 2>/dev/null | awk '/^SHA256:/ {print $2; exit}')
        [[ -n $out ]] || die "no SHA256 for $(apt_name "$name" "$arch")=$cand"
        [[ $cand != "$version" ]] && echo "fetch-inputs: $name ($arch): $version -> $cand"
        printf '%s %s %s %s%s\n' "$name" "$arch" "$cand" "$out" "${component:+ $component}" >>"$tmp"
    done <"$LOCK"
    chmod 0644 "$tmp"
    mv "$tmp" "$LOCK"
    trap - EXIT
}

fetch_one() {
    local name=$1 arch=$2 version=$3 sha=$4 component=$5 s deb got dl
    s=$(stem "$name" "$arch" "$version")
    deb=$DEBS/$s.deb
    # $deb.ok records "sha256 size mtime" of a .deb already verified, so an
    # unchanged cache is not re-hashed on every build.
    local stamp=
    [[ -f $deb ]] && stamp="$sha $(stat -c '%s %Y' "$deb")"
    if [[ -f $deb && -f $deb.ok && $(cat "$deb.ok") == "$stamp" ]]; then
        :
    elif [[ -f $deb ]]; then
        got=$(sha256sum "$deb" | cut -d' ' -f1)
        if [[ $got != "$sha" ]]; then
            rm -f "$deb" "$deb.ok"
            die "$deb: sha256 $got does not match the lock ($sha); removed it"
        fi
        echo "$stamp" >"$deb.ok"
    else
        check_arch "$arch"
        apt_opts "$component"
        dl=$(mktemp -d "$DEBS/.dl.XXXXXX")
        if ! (cd "$dl" && apt-get "${OPTS[@]}" download "$(apt_name "$name" "$arch")=$version" >/dev/null); then
            rm -rf "$dl"
            die "apt-get download $(apt_name "$name" "$arch")=$version failed (is the version still in the archive? try --update)"
        fi
        local files=("$dl"/*.deb)
        [[ ${#files[@]} == 1 && -f ${files[0]} ]] || { rm -rf "$dl"; die "expected one .deb for $name"; }
        got=$(sha256sum "${files[0]}" | cut -d' ' -f1)
        if [[ $got != "$sha" ]]; then
            rm -rf "$dl"
            die "$name $version ($arch): downloaded .deb has sha256 $got, the lock says $sha; refusing it (file removed)"
        fi
        mv "${files[0]}" "$deb"
        rm -rf "$dl"
        echo "$sha $(stat -c '%s %Y' "$deb")" >"$deb.ok"
    fi
    local dir=$UNPACKED/$s
    if [[ ! -f $dir/.cloudos-unpacked ]]; then
        rm -rf "$dir" "$dir.tmp"
        mkdir -p "$dir.tmp"
        dpkg -x "$deb" "$dir.tmp"
        # Debian generates modules.dep/alias/softdep in postinst; do the same here.
        local kdir
        for kdir in "$dir.tmp"/lib/modules/*/; do
            [[ -d $kdir/kernel ]] || continue
            command -v depmod >/dev/null || die "depmod not found (install kmod)"
            depmod -b "$dir.tmp" "$(basename "$kdir")"
        done
        echo "$sha" >"$dir.tmp/.cloudos-unpacked"
        mv "$dir.tmp" "$dir"
    elif [[ $(cat "$dir/.cloudos-unpacked") != "$sha" ]]; then
        rm -rf "$dir"
        fetch_one "$@"
    fi
}

case ${1:-} in
--update)
    update_lock
    ;;
--dir)
    [[ -n ${2:-} ]] || die "usage: $0 --dir PACKAGE [ARCH]"
    found=
    while read -r name arch version sha _; do
        if [[ $name == "$2" && ( -z ${3:-} || $arch == "$3" ) ]]; then
            echo "$UNPACKED/$(stem "$name" "$arch" "$version")"
            found=1
            break
        fi
    done < <(lock_entries)
    [[ -n $found ]] || die "$2 is not in $LOCK"
    ;;
"" | --arch)
    want=
    if [[ ${1:-} == --arch ]]; then
        [[ -n ${2:-} ]] || die "usage: $0 --arch DEBIAN-ARCH"
        want=$2
    fi
    mkdir -p "$DEBS" "$UNPACKED"
    lock_entries >/dev/null
    while read -r name arch version sha component; do
        [[ -z $want || $arch == all || $arch == "$want" ]] || continue
        fetch_one "$name" "$arch" "$version" "$sha" "$component"
    done < <(lock_entries)
    ;;
*)
    echo "usage: $0 [--arch DEBIAN-ARCH | --update | --dir PACKAGE [ARCH]]" >&2
    exit 2
    ;;
esac
