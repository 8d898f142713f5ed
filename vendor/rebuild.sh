#!/usr/bin/env bash
# Rebuilds the vendored crates from the published crate and the patch series
# (vendor/<crate>/patches/NNNN-name.patch), or checks that the tree equals that result.
#
#   vendor/rebuild.sh [--check] [CRATE...]   rebuild (default) or check every crate that has
#                                            vendor/CRATE/patches/SOURCE, or the ones named
#   vendor/rebuild.sh --git CRATE DIR        DIR: a git repository with the published crate as
#                                            its first commit and one commit per patch (stops
#                                            at a patch that does not apply, see --continue)
#   vendor/rebuild.sh --continue DIR         commit the fixed work tree as the patch that
#                                            failed, apply the rest
#   vendor/rebuild.sh --export DIR           write DIR's commits back as the series of its crate
#   vendor/rebuild.sh --unpack CRATE DIR     just the published crate (drop= applied) in DIR
#
# vendor/README.md describes the upgrade procedure. Nothing here runs cargo.
set -euo pipefail

VENDOR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$VENDOR")"
CACHE="${GATEWAY_VENDOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gateway-vendor}"
# Not produced by the series: kept as they are by a rebuild, left out of the comparison.
KEEP=(patches PATCHED.md)

die() { echo "rebuild.sh: $*" >&2; exit 2; }

TEMPS=()
cleanup() { if [[ ${#TEMPS[@]} -gt 0 ]]; then rm -rf "${TEMPS[@]}"; fi; }
trap cleanup EXIT

# source_field CRATE KEY: a `key=value` line of vendor/CRATE/patches/SOURCE.
source_field() {
    local file="$VENDOR/$1/patches/SOURCE" line
    [[ -f $file ]] || die "$file is missing"
    line="$(grep -E "^$2=" "$file" | tail -n 1 || true)"
    [[ -n $line ]] || die "$file has no $2="
    line="${line#*=}"
    line="${line#\"}"
    echo "${line%\"}"
}

# lock_checksum NAME VERSION: the checksum Cargo.lock records for that registry package, if any.
lock_checksum() {
    [[ -f $ROOT/Cargo.lock ]] || return 0
    awk -v n="$1" -v v="$2" '
        /^\[\[package\]\]/ { name = ""; ver = "" }
        /^name = /     { name = $3; gsub(/"/, "", name) }
        /^version = /  { ver = $3; gsub(/"/, "", ver) }
        /^checksum = / { c = $3; gsub(/"/, "", c); if (name == n && ver == v) print c }
    ' "$ROOT/Cargo.lock"
}

# fetch_crate CRATE: prints the path of the verified .crate file of CRATE's SOURCE.
fetch_crate() {
    local crate="$1" name version url want lock file tmp got
    name="$(source_field "$crate" name)"
    version="$(source_field "$crate" version)"
    url="$(source_field "$crate" url)"
    want="$(source_field "$crate" sha256)"
    [[ $url == *"/$name-$version.crate" ]] || die "$crate: url does not name $name-$version.crate"
    lock="$(lock_checksum "$name" "$version")"
    if [[ -n $lock && $lock != "$want" ]]; then
        die "$crate: Cargo.lock says sha256 $lock for $name $version, patches/SOURCE says $want"
    fi
    file=""
    for f in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$name-$version.crate" \
        "$CACHE/$name-$version.crate"; do
        if [[ -f $f ]] && [[ "$(sha256sum "$f" | cut -d' ' -f1)" == "$want" ]]; then
            file="$f"
            break
        fi
    done
    if [[ -z $file ]]; then
        mkdir -p "$CACHE"
        tmp="$(mktemp "$CACHE/.download.XXXXXX")"
        echo "rebuild.sh: downloading $url" >&2
        curl -sSfL --retry 3 -o "$tmp" "$url" || { rm -f "$tmp"; die "$crate: download failed: $url"; }
        got="$(sha256sum "$tmp" | cut -d' ' -f1)"
        if [[ $got != "$want" ]]; then
            rm -f "$tmp"
            die "$crate: $url has sha256 $got, patches/SOURCE expects $want"
        fi
        file="$CACHE/$name-$version.crate"
        mv "$tmp" "$file"
    fi
    echo "$file"
}

# unpack CRATE DEST: the published crate in DEST, without the files SOURCE's drop= lists.
unpack() {
    local crate="$1" dest="$2" name version file d
    name="$(source_field "$crate" name)"
    version="$(source_field "$crate" version)"
    file="$(fetch_crate "$crate")"
    mkdir -p "$dest"
    tar -xzf "$file" -C "$dest" --strip-components=1 "$name-$version"
    for d in $(source_field "$crate" drop); do
        [[ $d != */* && $d != ..* ]] || die "$crate: drop= entries are top-level names"
        rm -rf "${dest:?}/$d"
    done
}

series() { find "$VENDOR/$1/patches" -maxdepth 1 -name '[0-9][0-9][0-9][0-9]-*.patch' | LC_ALL=C sort; }

# apply_one DIR PATCH: no fuzz, the series must apply exactly (offsets are fine). GNU patch,
# or `git apply` where patch is not installed (GATEWAY_PATCH_TOOL=git forces it).
apply_one() {
    if [[ ${GATEWAY_PATCH_TOOL:-} != git ]] && command -v patch >/dev/null; then
        patch -d "$1" -p1 --no-backup-if-mismatch --forward --batch --fuzz=0 -s -i "$2" >&2
    else
        (cd "$1" && GIT_DIR=/nonexistent git apply -p1 "$2") >&2
    fi
}

apply_series() {
    local crate="$1" dir="$2" p
    for p in $(series "$crate"); do
        if ! apply_one "$dir" "$p"; then
            echo "rebuild.sh: $crate: $(basename "$p") does not apply; fix it with --git (vendor/README.md)" >&2
            return 1
        fi
    done
}

# Every change of src/ against the published crate lies between a line with `gateway patch`
# and the next `gateway patch end`, or on a line ending in a `// gateway patch` comment.
check_markers() {
    local crate="$1" base="$2"
    command -v python3 >/dev/null || { echo "rebuild.sh: python3 missing, markers not checked" >&2; return 0; }
    { diff -rU0 -N "$base/src" "$VENDOR/$crate/src" || [[ $? == 1 ]]; } | python3 -c '
import re, sys
bad = 0; cur = None; hunks = {}
for line in sys.stdin:
    if line.startswith("+++ "):
        cur = line[4:].split("\t")[0].rstrip("\n"); hunks[cur] = []
    elif line.startswith("@@") and cur:
        m = re.match(r"@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@", line)
        hunks[cur].append((int(m.group(1)), int(m.group(2) if m.group(2) is not None else 1)))
for f, hs in hunks.items():
    lines = open(f).read().split("\n")
    inside = [False] * (len(lines) + 2); state = False
    for i, l in enumerate(lines, 1):
        if "gateway patch end" in l:
            inside[i] = True; state = False
        elif "gateway patch" in l:
            inside[i] = True
            if not l.split("//")[0].strip():  # a comment line opens a region
                state = True
        else:
            inside[i] = state
    for start, n in hs:
        if n == 0:  # lines deleted after line `start`
            ok = inside[start] or inside[min(start + 1, len(lines))]
        else:
            ok = all(inside[i] or not lines[i - 1].strip() for i in range(start, start + n))
        if not ok:
            bad += 1
            print(f"rebuild.sh: unmarked change: {f}:{start} ({n} lines)", file=sys.stderr)
sys.exit(1 if bad else 0)'
}

build_one() { # CRATE MODE
    local crate="$1" mode="$2" work base out k status=0
    work="$(mktemp -d)"
    TEMPS+=("$work")
    base="$work/base"
    out="$work/out"
    unpack "$crate" "$base"
    cp -a "$base" "$out"
    apply_series "$crate" "$out" || return 1
    if [[ $mode == check ]]; then
        local excl=()
        for k in "${KEEP[@]}"; do excl+=(-x "$k"); done
        [[ -e $out/LICENSE ]] || excl+=(-x LICENSE)
        if ! diff -ruN "${excl[@]}" "$out" "$VENDOR/$crate"; then
            echo "rebuild.sh: vendor/$crate differs from the published crate + its patch series (diff above: --- series result, +++ tree)" >&2
            status=1
        fi
        check_markers "$crate" "$base" || status=1
        [[ $status == 0 ]] && echo "rebuild.sh: vendor/$crate = $(source_field "$crate" name) $(source_field "$crate" version) + $(series "$crate" | wc -l) patches"
        return $status
    fi
    # rebuild: replace everything but KEEP (and a LICENSE the crate does not ship)
    local entry keep
    for entry in "$VENDOR/$crate"/* "$VENDOR/$crate"/.[!.]*; do
        [[ -e $entry ]] || continue
        keep=0
        for k in "${KEEP[@]}"; do [[ $(basename "$entry") == "$k" ]] && keep=1; done
        [[ $(basename "$entry") == LICENSE && ! -e $out/LICENSE ]] && keep=1
        [[ $keep == 1 ]] || rm -rf "$entry"
    done
    (cd "$out" && tar -cf - .) | (cd "$VENDOR/$crate" && tar -xf -)
    echo "rebuild.sh: vendor/$crate rebuilt"
}

git_q() { git -C "$1" -c user.name=rebuild.sh -c user.email=rebuild.sh@localhost "${@:2}"; }

# --git / --continue: apply the pending patches of DIR one commit each.
git_apply_pending() {
    local dir="$1" p
    while [[ -s $dir/.git/gateway-pending ]]; do
        p="$(head -n 1 "$dir/.git/gateway-pending")"
        if ! patch -d "$dir" -p1 --no-backup-if-mismatch --forward --batch -i "$p"; then
            echo "rebuild.sh: $(basename "$p") does not apply. Fix the files (see the .rej files in $dir)," >&2
            echo "            then: vendor/rebuild.sh --continue $dir" >&2
            return 1
        fi
        git_commit_patch "$dir" "$p"
    done
    echo "rebuild.sh: $dir: the published crate (tag gateway-base) and $(git -C "$dir" rev-list --count gateway-base..HEAD) patches, one commit each"
}

git_commit_patch() { # DIR PATCHFILE: commit the work tree as that patch, drop it from pending
    local dir="$1" p="$2" msg
    find "$dir" -path "$dir/.git" -prune -o \( -name '*.rej' -o -name '*.orig' \) -type f -print -exec rm -f {} +
    msg="$(basename "$p" .patch)"$'\n\n'"$(sed -n '/^diff --git /q;p' "$p")"
    git_q "$dir" add -A
    git_q "$dir" commit -q --allow-empty -m "$msg"
    sed -i 1d "$dir/.git/gateway-pending"
}

cmd_git() {
    local crate="$1" dir="$2"
    [[ -f $VENDOR/$crate/patches/SOURCE ]] || die "no vendor/$crate/patches/SOURCE"
    [[ ! -e $dir ]] || die "$dir exists"
    unpack "$crate" "$dir"
    git -C "$dir" init -q
    echo "$crate" >"$dir/.git/gateway-crate"
    git_q "$dir" add -A
    git_q "$dir" commit -q -m "$(source_field "$crate" name) $(source_field "$crate" version) as published (drop= applied)"
    git -C "$dir" tag gateway-base
    series "$crate" >"$dir/.git/gateway-pending"
    git_apply_pending "$dir"
}

cmd_continue() {
    local dir="$1"
    [[ -s $dir/.git/gateway-pending ]] || die "$dir: no patch pending"
    git_commit_patch "$dir" "$(head -n 1 "$dir/.git/gateway-pending")"
    git_apply_pending "$dir"
}

cmd_export() {
    local dir="$1" crate c subject n=0
    crate="$(cat "$dir/.git/gateway-crate")" || die "$dir was not made by --git"
    [[ ! -s $dir/.git/gateway-pending ]] || die "$dir: patches still pending (--continue first)"
    [[ -z "$(git -C "$dir" status --porcelain)" ]] || die "$dir: uncommitted changes"
    rm -f "$VENDOR/$crate/patches/"[0-9][0-9][0-9][0-9]-*.patch
    for c in $(git -C "$dir" rev-list --reverse gateway-base..HEAD); do
        n=$((n + 1))
        subject="$(git -C "$dir" log -1 --format=%s "$c")"
        subject="$(printf '%04d-%s' "$n" "${subject#[0-9][0-9][0-9][0-9]-}")"
        [[ $subject =~ ^[0-9]{4}-[a-z0-9.-]+$ ]] || die "commit $c: subject must be NNNN-short-name (got $subject)"
        {
            git -C "$dir" log -1 --format=%b "$c" | sed -e '/./,$!d' | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}'
            echo
            git -C "$dir" -c core.quotepath=off diff --no-color --no-renames --no-ext-diff \
                --src-prefix=a/ --dst-prefix=b/ "$c^" "$c"
        } >"$VENDOR/$crate/patches/$subject.patch"
    done
    echo "rebuild.sh: wrote $n patches to vendor/$crate/patches; now run vendor/rebuild.sh $crate"
}

crates_of() {
    if [[ $# -gt 0 ]]; then
        printf '%s\n' "$@"
    else
        for s in "$VENDOR"/*/patches/SOURCE; do basename "$(dirname "$(dirname "$s")")"; done
    fi
}

mode=rebuild
case "${1:-}" in
    --check) mode=check; shift ;;
    --git) [[ $# == 3 ]] || die "usage: --git CRATE DIR"; cmd_git "$2" "$3"; exit ;;
    --continue) [[ $# == 2 ]] || die "usage: --continue DIR"; cmd_continue "$2"; exit ;;
    --export) [[ $# == 2 ]] || die "usage: --export DIR"; cmd_export "$2"; exit ;;
    --unpack) [[ $# == 3 ]] || die "usage: --unpack CRATE DIR"; [[ ! -e $3 ]] || die "$3 exists"; unpack "$2" "$3"; exit ;;
    -h | --help) sed -n '2,16p' "$0"; exit ;;
    -*) die "unknown option $1" ;;
esac
status=0
for crate in $(crates_of "$@"); do
    [[ -f $VENDOR/$crate/patches/SOURCE ]] || die "no vendor/$crate/patches/SOURCE"
    build_one "$crate" "$mode" || status=1
done
exit $status
