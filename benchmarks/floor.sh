#!/usr/bin/env bash
# The floor: the least a push deploy can do. Per host, in parallel, one OpenSSH session that
# unpacks the tarball from stdin into releases/N and swaps `current` with ln -s + mv -T (rename(2)).
# No lock, no checksum, no cache, no cleanup, no rollback bookkeeping.
#
#   floor.sh KEY KNOWN_HOSTS DEPLOY_TO RELEASE TARBALL HOST:PORT [HOST:PORT...]
#
# TARBALL "-" is the floor of a rollback: no upload, only the ln -s + mv -T swap to an existing
# releases/RELEASE. Exits non-zero if any host failed.
set -uo pipefail
key=$1 known_hosts=$2 deploy_to=$3 release=$4 tarball=$5
shift 5
swap="ln -s releases/$release $deploy_to/cur.tmp && mv -T $deploy_to/cur.tmp $deploy_to/current"
if [[ $tarball == - ]]; then
    remote=$swap tarball=/dev/null
else
    remote="mkdir -p $deploy_to/releases/$release && tar -xzf - -C $deploy_to/releases/$release && $swap"
fi
pids=()
for target in "$@"; do
    ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -i "$key" -o UserKnownHostsFile="$known_hosts" \
        -o StrictHostKeyChecking=yes -o ConnectTimeout=10 -p "${target##*:}" "deploy@${target%:*}" "$remote" \
        <"$tarball" &
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
    wait "$pid" || failed=$((failed + 1))
done
((failed == 0)) || { echo "floor: $failed host(s) failed" >&2; exit 1; }
