#!/bin/sh
# Make sure redis-server and redis-cli are on PATH; install Debian's package when they are not.
set -e
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    exit 0
fi
echo "redis-server not found; installing Debian's redis-server package" >&2
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q redis-server
# The package may start a system instance; the tests start their own on free ports.
command -v redis-server >/dev/null 2>&1
