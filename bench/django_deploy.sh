#!/bin/bash
# The baseline of `go run ./bench -only django`: the hand-written deploy
# script of the article issue 10 refers to, as a typical Django shop writes
# it, on the same stack as the reconciler (gunicorn --chdir <root>/current
# under supervisord, behind nginx). It checks nothing after the switch.
#
#   django_deploy.sh deploy   ROOT REPO COMMIT PROGRAM SUPERVISOR_CONF
#   django_deploy.sh rollback ROOT PROGRAM SUPERVISOR_CONF   link the release before the linked one, HUP
#   django_deploy.sh forward  ROOT PROGRAM SUPERVISOR_CONF   link the newest release, HUP
#
# Prints "phase NAME START END" on stderr (EPOCHREALTIME) for each phase.
set -euo pipefail
export DJANGO_SETTINGS_MODULE=broken_brackets.settings

mark=$EPOCHREALTIME
phase() {
	local now=$EPOCHREALTIME
	echo "phase $1 $mark $now" >&2
	mark=$now
}

# gunicorn re-reads the link on HUP thanks to --chdir; a stopped program
# (the first deploy) is started.
reload() {
	if supervisorctl -c "$conf" status "$program" | grep -q RUNNING; then
		supervisorctl -c "$conf" signal HUP "$program" >/dev/null
	else
		supervisorctl -c "$conf" start "$program" >/dev/null
	fi
}

link() {
	ln -sfn "$1" "$root/current.new"
	mv -T "$root/current.new" "$root/current"
}

case $1 in
deploy)
	root=$2 repo=$3 commit=$4 program=$5 conf=$6
	release=$root/releases/$(date -u +%Y%m%dT%H%M%S.%N)
	mkdir -p "$root/releases"
	git clone -q "$repo" "$release"
	git -C "$release" checkout -q "$commit"
	phase checkout
	cd "$release"
	python3 -m venv --system-site-packages venv
	# PyPI is out of reach: Debian's packages satisfy requirements.txt.
	venv/bin/pip install -q --no-index -r requirements.txt
	phase venv+pip
	ln -s "$root/shared/var" var
	git rev-parse HEAD >REVISION
	venv/bin/python manage.py collectstatic --noinput -v 0
	phase collectstatic
	venv/bin/python manage.py migrate --noinput -v 0
	phase migrate
	link "$release"
	reload
	phase switch+HUP
	# keep the last 5
	ls -1d "$root"/releases/* | head -n -5 | xargs -r rm -rf
	;;
rollback)
	root=$2 program=$3 conf=$4
	cur=$(readlink "$root/current")
	prev=$(ls -1d "$root"/releases/* | awk -v cur="$cur" '$0 == cur { print last; exit } { last = $0 }')
	if [ -z "$prev" ]; then
		echo "no release before $cur" >&2
		exit 1
	fi
	link "$prev"
	reload
	phase switch+HUP
	;;
forward)
	root=$2 program=$3 conf=$4
	link "$(ls -1d "$root"/releases/* | tail -n 1)"
	reload
	phase switch+HUP
	;;
*)
	echo "usage: $0 deploy|rollback|forward ..." >&2
	exit 2
	;;
esac
