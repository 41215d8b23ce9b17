#!/bin/sh
# Tell systemd about the new or upgraded unit. The service is neither
# enabled nor started: it needs /etc/reconciler/desired.yaml first.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	# An upgrade restarts a daemon that was running, so it runs the new
	# binary; SIGTERM lets its running step finish.
	if systemctl is-active --quiet reconciler.service; then
		systemctl restart reconciler.service || true
	fi
fi
