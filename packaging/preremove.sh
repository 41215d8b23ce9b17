#!/bin/sh
# On removal (not on upgrade), stop and disable the daemon. Releases, the
# state under /var/lib/reconciler and /etc/reconciler stay.
set -e
if [ "$1" = "remove" ] && [ -d /run/systemd/system ]; then
	systemctl disable --now reconciler.service >/dev/null 2>&1 || true
fi
