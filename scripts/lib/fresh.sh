# Sourced by the build scripts: incremental rebuilds.
#
#   if ! fresh TARGET ARGS-AND-INPUTS...; then build TARGET; recorded TARGET; fi
#
# TARGET is up to date when its recorded recipe (the arguments, each existing input's
# size and mtime, and SOURCE_DATE_EPOCH when set) is what it was at the last build.
fresh() {
    local target=$1 key
    shift
    key=$(printf '%s\n' "SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-}" "$@"
        for f in "$@"; do [[ -e $f ]] && stat -L -c '%n %s %Y' "$f"; done)
    if [[ -f $target && -f $target.recipe && $(cat "$target.recipe") == "$key" ]]; then
        return 0
    fi
    echo "$key" >"$target.recipe.new"
    return 1
}
recorded() { mv "$1.recipe.new" "$1.recipe"; }
