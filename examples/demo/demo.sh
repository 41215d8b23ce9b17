#!/usr/bin/env bash
# Deploys the bundled hello app with reconciler: v1, then v2, then a
# rollback to v1 by editing `commit:`. Needs only Go and git; no root, no
# system services. The server listens on 127.0.0.1 only.
#   examples/demo/demo.sh [DIR]
# DIR defaults to a new directory under $TMPDIR (or /tmp): the demo writes
# nothing into the checkout, so it stays clean.
set -euo pipefail
repo_root=$(cd "$(dirname "$0")/../.." && pwd)
if [ $# -gt 0 ]; then
  DEMO=$(mkdir -p "$1" && cd "$1" && pwd)
else
  DEMO=$(mktemp -d "${TMPDIR:-/tmp}/reconciler-demo.XXXXXX")
fi
echo "demo directory: $DEMO"
PORT=${PORT:-18080}
export GIT_AUTHOR_NAME=demo GIT_AUTHOR_EMAIL=demo@example.invalid GIT_COMMITTER_NAME=demo GIT_COMMITTER_EMAIL=demo@example.invalid

step() { printf '\n\033[1m### %s\033[0m\n' "$*"; }
get() { # GET / with bash alone, so the demo needs no curl
  # The server may still be starting: a refused connection is expected
  # until then, so bash's own message for it goes to a file (the braces
  # make the 2> apply before exec opens the socket) and is shown only if
  # the server never answers.
  local err="$DEMO/connect.err"
  for _ in $(seq 50); do
    if { exec 3<>"/dev/tcp/127.0.0.1/$PORT"; } 2>"$err"; then
      printf 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
      tail -n 1 <&3; exec 3<&-; rm -f "$err"; return
    fi
    sleep 0.1
  done
  echo "demo: nothing answers on 127.0.0.1:$PORT after 5s: $(tail -n 1 "$err" | sed 's/^.*: \([^:]*\)$/\1/')" >&2
  echo "demo: the server's log is $DEMO/host/shared/run/hello.log" >&2
  return 1
}
stop() { [ -f "$DEMO/host/shared/run/hello.pid" ] && kill "$(cat "$DEMO/host/shared/run/hello.pid")" 2>/dev/null || true; }
trap stop EXIT

step "build reconciler"
go build -o "$DEMO/reconciler" "$repo_root/cmd/reconciler"
rec() { (cd "$DEMO" && ./reconciler "$@"); }

step "make the app's git repository: v1 and v2"
rm -rf "$DEMO/app" && mkdir -p "$DEMO/app" && cp "$repo_root"/examples/demo/app/* "$DEMO/app/"
git -C "$DEMO/app" init -q -b main
echo v1 > "$DEMO/app/VERSION"; git -C "$DEMO/app" add -A; git -C "$DEMO/app" commit -qm v1; git -C "$DEMO/app" tag v1
echo v2 > "$DEMO/app/VERSION"; git -C "$DEMO/app" commit -qam v2; git -C "$DEMO/app" tag v2
sed -e "s|@DEMO@|$DEMO|g" -e "s|@PORT@|$PORT|g" "$repo_root/examples/demo/desired.yaml.in" > "$DEMO/desired.yaml"

step "reconciler plan   (a dry run: nothing is written)"
rec plan
step "reconciler apply  (commit: v1)"
rec apply
get

step "deploy v2: set commit: v2 and apply"
sed -i 's/^  commit: v1 /  commit: v2 /' "$DEMO/desired.yaml"
rec apply
get

step "roll back: set commit: v1 again. The v1 release is on disk: no build, just switch and restart"
sed -i 's/^  commit: v2 /  commit: v1 /' "$DEMO/desired.yaml"
rec plan
rec apply
get

step "reconciler status"
rec status
echo
echo "Done. The server is stopped on exit; explore $DEMO (desired.yaml, host/)."
