#!/usr/bin/env bash
# Reads one source of a discocache root, from docs/FORMAT.md alone, with jq.
#
# Usage: read.sh ROOT TIER/NAME
#
# Prints one JSON line: {"source", "age_seconds", "fresh", "revision", "data"}.
# The payload <root>/<tier>/<name>.json is the truth: its bytes are the data
# and its mtime is when they were fetched, so age = now - mtime. The sidecar
# is optional extra (revision, ttl): FORMAT.md (version 1) puts it at
# <tier>/<name>.meta.json; format 2 moves it to <tier>/.discocache/, so both
# places are tried. Needs bash, jq and GNU stat. Exit 3 when there is no data.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: read.sh ROOT TIER/NAME" >&2
    exit 2
fi
root=$1 source=$2
part='[a-z0-9][a-z0-9-]{0,62}'
if ! [[ $source =~ ^($part)/($part)$ ]]; then
    echo "read.sh: '$source' is not tier/name" >&2
    exit 2
fi
tier=${BASH_REMATCH[1]} name=${BASH_REMATCH[2]}
payload=$root/$tier/$name.json

# Copy the payload once, then use only the copy: the file is replaced by
# rename, so this is one whole version (and its mtime goes with it).
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
if ! cp --preserve=timestamps "$payload" "$tmp" 2>/dev/null; then
    echo "read.sh: $source: no data ($payload does not exist)" >&2
    exit 3
fi
age=$(( $(date +%s) - $(stat -c %Y "$tmp") ))
(( age < 0 )) && age=0

meta='null'
for sidecar in "$root/$tier/$name.meta.json" "$root/$tier/.discocache/$name.meta.json"; do
    if [ -f "$sidecar" ] && jq -e 'type == "object" and (.format == 1 or .format == 2)' \
        "$sidecar" >/dev/null 2>&1; then
        meta=$(jq -c '{revision, ttl_ms}' "$sidecar")
        break
    fi
done

jq -c --arg source "$source" --argjson age "$age" --argjson meta "$meta" '{
    source: $source,
    age_seconds: $age,
    fresh: (if $meta.ttl_ms then ($age * 1000 < $meta.ttl_ms) else null end),
    revision: $meta.revision,
    data: .
}' "$tmp"
