#!/bin/sh
# Installs what `cargo bench --bench daemon` compares against: bkt (a
# cached hit of `bkt --ttl=1h -- cat FILE` is one of its baselines).
# Safe to run again: installs only what is missing.
set -eu

if command -v bkt >/dev/null 2>&1 || [ -x "${HOME:-}/.cargo/bin/bkt" ]; then
    echo "bkt: already installed"
else
    echo "bkt: installing with cargo"
    cargo install bkt --locked
fi
