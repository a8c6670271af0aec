# Sourced by the scripts that download from Debian (fetch-inputs.sh, debian-guest.sh):
# which Debian mirror to use. It comes from a setting or from the host's own apt
# configuration, never from a host name written in this repository.
#
#   debian_mirror SUITE [APT_ETC]
#
# prints the mirror's URI: $CLOUDOS_DEBIAN_MIRROR when set, else the URI of the
# first `deb` source of the host whose suites include SUITE itself, read in apt's
# order: APT_ETC/sources.list (one-line format), then APT_ETC/sources.list.d/ by
# name, `*.list` one-line and `*.sources` deb822 (APT_ETC defaults to /etc/apt;
# scripts/tests/apt-mirror.sh points it at sample files). cdrom: sources and
# deb822 stanzas with `Enabled: no` are passed over. Without a mirror it says so on
# stderr and fails.
debian_mirror() {
    local suite=$1 etc=${2:-/etc/apt} f uri
    if [[ -n ${CLOUDOS_DEBIAN_MIRROR:-} ]]; then
        echo "$CLOUDOS_DEBIAN_MIRROR"
        return 0
    fi
    for f in "$etc/sources.list" "$etc"/sources.list.d/*; do
        [[ -f $f ]] || continue
        case $f in
        */sources.list | *.list) uri=$(_apt_mirror_one_line "$suite" "$f") ;;
        *.sources) uri=$(_apt_mirror_deb822 "$suite" "$f") ;;
        *) continue ;; # apt ignores other names too (e.g. *.list.disabled)
        esac
        if [[ -n $uri ]]; then
            echo "$uri"
            return 0
        fi
    done
    echo "no Debian mirror for $suite in the host's apt sources ($etc/sources.list," \
        "$etc/sources.list.d/*.list and *.sources); set CLOUDOS_DEBIAN_MIRROR to the" \
        "URI of a Debian mirror (the directory that holds dists/ and pool/)" >&2
    return 1
}

# One-line format: `deb [options] URI SUITE COMPONENT...`; the options in brackets
# may contain spaces.
_apt_mirror_one_line() {
    awk -v s="$1" '$1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
        if ($i !~ /^cdrom:/ && $(i + 1) == s) { print $i; exit }
    }' "$2"
}

# deb822 format: stanzas separated by blank lines, field names in any case, a
# value may go on over indented lines, `#` lines are comments.
_apt_mirror_deb822() {
    awk -v s="$1" '
        function flush(   n, t, i, ok) {
            if (tolower(f["enabled"]) != "no") {
                n = split(f["types"], t, " "); ok = 0
                for (i = 1; i <= n; i++) if (t[i] == "deb") ok = 1
                n = split(f["suites"], t, " "); if (ok) { ok = 0; for (i = 1; i <= n; i++) if (t[i] == s) ok = 1 }
                n = split(f["uris"], t, " ")
                if (ok) for (i = 1; i <= n; i++) if (t[i] !~ /^cdrom:/) { print t[i]; found = 1; break }
            }
            delete f; key = ""
        }
        /^#/ { next }
        /^[[:space:]]*$/ { flush(); if (found) exit; next }
        /^[[:space:]]/ { if (key != "") f[key] = f[key] " " $0; next }
        {
            key = tolower(substr($0, 1, index($0, ":") - 1))
            v = substr($0, index($0, ":") + 1)
            gsub(/^[[:space:]]+|[[:space:]]+$/, "", v)
            f[key] = v
        }
        END { if (!found) flush() }' "$2"
}
