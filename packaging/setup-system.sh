#!/bin/sh
# System packages anond needs to build on a fresh Debian/Ubuntu machine:
# libsystemd-dev + pkg-config for systemd-python (journald, sd_notify), systemd for systemd-analyze,
# chromium for the review UI's browser tests, nats-server for the cluster tests.
set -e
need=""
pkg-config --exists libsystemd 2>/dev/null || need="$need libsystemd-dev pkg-config"
command -v systemd-analyze >/dev/null 2>&1 || need="$need systemd"
# The review UI's browser tests drive Debian's chromium through Playwright (no browser download).
command -v chromium >/dev/null 2>&1 || need="$need chromium"
# The cluster tests start a real NATS server with JetStream (Debian's nats-server).
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need="$need nats-server"
python3 -c 'import sysconfig,os,sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"],"Python.h")))' || need="$need python3-dev"
[ -z "$need" ] && exit 0
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
echo "installing system packages:$need"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need >/dev/null
