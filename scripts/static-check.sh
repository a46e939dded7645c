#!/usr/bin/env bash
# Checks that the fully static kiln (x86_64-unknown-linux-musl; the release
# build unless a binary is given) needs nothing beside it: in a chroot that holds only the binary, an
# example script and an empty data directory, `kiln run` runs the script and
# `kiln serve` answers /readyz. Needs root (chroot); CI runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

# Usage: scripts/static-check.sh [BINARY]. Without BINARY it builds the
# release binary; CI passes the debug one its test run already built for the
# same target, rather than spend 20 minutes building twice.
target=x86_64-unknown-linux-musl
if [ $# -ge 1 ]; then
    binary=$1
else
    cargo build --release --locked --target "$target" -p kiln
    binary="target/$target/release/kiln"
fi

description=$(file -b "$binary")
echo "kiln: $description"
case "$description" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) echo "not a static binary" >&2; exit 1 ;;
esac
echo "size: $(stat -c %s "$binary") bytes"

# `env -i` leaves no PATH to find chroot by.
chroot=$(command -v chroot)
root=$(mktemp -d)
server=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    rm -rf "$root"
}
trap cleanup EXIT
install -m 0755 "$binary" "$root/kiln"
cp components/examples/hello.js "$root/hello.js"
mkdir "$root/data"

# `env -i`: nothing of this shell's environment (HOME, PATH) reaches it either.
output=$(env -i "$chroot" "$root" /kiln run /hello.js --params '{"name": "chroot"}' --json)
echo "kiln run: $output"
grep -Eq '"status": *"completed"' <<<"$output" \
    || { echo "kiln run did not complete in the chroot" >&2; exit 1; }

# With a cache directory, the compile runs in a child process of the binary,
# found without /proc (there is none here) by the path it was started by.
output=$(env -i "$chroot" "$root" /kiln run /hello.js --cache-dir /data/cache --params '{"name": "child"}' --json)
echo "kiln run (compiled in a child): $output"
grep -Eq '"status": *"completed"' <<<"$output" \
    || { echo "kiln run with a compile child did not complete in the chroot" >&2; exit 1; }
ls "$root/data/cache/"*.cwasm >/dev/null \
    || { echo "the compile child left no artifact in the cache" >&2; exit 1; }

# Created here, so reading it cannot race the background job's redirection.
: >"$root/stdout"
env -i KILN_ADMIN_PASSWORD=static-check-password \
    "$chroot" "$root" /kiln serve --listen 127.0.0.1:0 --data /data >"$root/stdout" 2>"$root/stderr" &
server=$!
address=""
for _ in $(seq 100); do
    address=$(sed -n 's/^Kiln listening on //p' "$root/stdout")
    [ -n "$address" ] && break
    sleep 0.05
done
[ -n "$address" ] || { echo "kiln serve did not start:" >&2; cat "$root/stderr" >&2; exit 1; }
# Ready once both language runtimes are compiled (an empty cache here: a
# minute or two); 503 until then.
status=""
for _ in $(seq 600); do
    status=$(curl -s -o /dev/null -w '%{http_code}' "$address/readyz" || true)
    [ "$status" = 200 ] && break
    sleep 0.5
done
echo "GET $address/readyz: $status"
[ "$status" = 200 ] || { cat "$root/stderr" >&2; exit 1; }
kill -TERM "$server"
wait "$server"
server=""
echo "static binary: ok"
