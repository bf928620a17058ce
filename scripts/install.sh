#!/usr/bin/env bash
# Installs vipd: the binary (/usr/local/sbin/vipd), the systemd unit, an example
# configuration (/etc/vipd/vipd.toml) and a heartbeat key (/etc/vipd/auth.key), each only
# if none is there yet.
#
#   ./scripts/setup.sh && ./scripts/install.sh     # then edit /etc/vipd/vipd.toml
#   systemctl enable --now vipd
#
# Knobs: DESTDIR (stage into a directory instead of /), VIPD_BIN (an already built binary;
# otherwise `cargo build --release` builds one).
set -euo pipefail
cd "$(dirname "$0")/.."
DESTDIR=${DESTDIR:-}

if [ -z "${VIPD_BIN:-}" ]; then
    cargo build --release --locked --package vipd
    VIPD_BIN=target/release/vipd
fi
install -D -m 0755 "$VIPD_BIN" "$DESTDIR/usr/local/sbin/vipd"
install -D -m 0644 dist/vipd.service "$DESTDIR/etc/systemd/system/vipd.service"
if [ -e "$DESTDIR/etc/vipd/vipd.toml" ]; then
    install -D -m 0644 dist/vipd.toml "$DESTDIR/etc/vipd/vipd.toml.example"
    echo "install: kept the existing /etc/vipd/vipd.toml (example in vipd.toml.example)"
else
    install -D -m 0644 dist/vipd.toml "$DESTDIR/etc/vipd/vipd.toml"
fi
# The heartbeat key the example configuration names: made once, here; copy this file (mode
# 0600) to every node of the cluster instead of making one per node.
if [ ! -e "$DESTDIR/etc/vipd/auth.key" ]; then
    install -d -m 0755 "$DESTDIR/etc/vipd"
    "$DESTDIR/usr/local/sbin/vipd" keygen "$DESTDIR/etc/vipd/auth.key"
fi
if [ -z "$DESTDIR" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
echo "install: done. Copy /etc/vipd/auth.key to every node (the same key everywhere), edit /etc/vipd/vipd.toml, check it with 'vipd check-config', then 'systemctl enable --now vipd'."
