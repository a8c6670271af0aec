# Sourced by the image scripts: workspace_version ROOT prints the version in
# ROOT/Cargo.toml's [workspace.package] (it names the images), or fails.
workspace_version() {
    local v
    v=$(awk '
        /^\[/ { sect = $0 }
        sect == "[workspace.package]" && $1 == "version" { gsub(/"/, "", $3); print $3; exit }
    ' "$1/Cargo.toml")
    [[ -n $v ]] || { echo "no [workspace.package] version in $1/Cargo.toml" >&2; return 1; }
    echo "$v"
}
