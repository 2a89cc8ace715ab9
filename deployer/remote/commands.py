"""Remote shell scripts, built as strings and never run here.

Every value that reaches the remote shell passes through `q` (shlex.quote). The transport is the
only place that executes these. Scripts that change a host call `held` before each change: the
session puts the lease check (`lease`) in front of every command of a run that holds the lock. One script is one remote command execution, so the deploy is a
handful of round trips per host: inspect+lock, prepare (upload+extract+link), switch, finish.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass

from deployer.plan.paths import MANIFEST, Paths
from deployer.report.output import redact

q = shlex.quote

# Exit codes of the scripts, mapped to messages by the caller when stderr says nothing better.
NOT_WRITABLE = 20
SHA_MISMATCH = 23
MISSING_SHARED = 24
UNSAFE_TREE = 25
CURRENT_NOT_LINK = 30
RELEASE_INCOMPLETE = 31
LEASE_LOST = 32

TAKEOVER_MARK = '"@@stale@@"'      # in a takeover's ledger line: replaced by the stale holder, on the host

_HEADER = "set -e\numask 022\n"


def _lines(*parts: str) -> str:
    return _HEADER + "\n".join(p for p in parts if p) + "\n"


def _emit(key: str, value_expr: str) -> str:
    """A tab-separated line the state parser reads; value_expr is already shell syntax."""
    return f"printf '%s\\t%s\\n' {q(key)} {value_expr}"


def inspect(paths: Paths, *, lock_info: str | None = None, lock_token: str | None = None,
            artifact_sha: str | None = None, free_space: bool = True, lock_ttl: int | None = None,
            takeover_ledger: str | None = None) -> str:
    """Report the host's deploy state; with lock_info, also try to take the lock (mkdir wins once).

    With lock_ttl, a lock whose holder has not renewed it (see `lease`) for longer than that, by
    the host's own clock, is taken over: see _takeover. Run before every action, so it forks
    little: every release's metadata and the lock's owner are read by one awk, whatever the
    number of releases."""
    d = q(paths.deploy_to)
    lock, info_file = q(paths.lock), q(paths.lock_info)
    parts = [f"D={d}", "set --"]
    if lock_info is not None:
        parts.append(
            f"mkdir -p {q(paths.state)} 2>/dev/null || "
            f"{{ printf '%s\\n' {q(f'cannot create {paths.state}: deploy_to is not writable by')}\" $(id -un)\" >&2; "
            f"exit {NOT_WRITABLE}; }}"
        )
        # mkdir wins once. A lost race reads the holder at once (the holder may be done a moment
        # later); one that has just released means try again, one between its mkdir and its info
        # write is waited for: at most 20 more tries, 1 s in all
        # the heartbeat is written last: a lock without one is never judged stale
        silent = _emit("lock_silent", '"$s"')
        parts.append(
            f"i=0; while :; do if mkdir {lock} 2>/dev/null; then "
            f"printf '%s\\n' {q(lock_info)} > {info_file}; "
            f"printf '%s' {q(lock_token or '')} > {q(paths.lock_token)}; : > {q(paths.lock_beat)}; "
            f"{_emit('lock_acquired', '1')}; break; fi; "
            f"h=$(head -c 4096 {info_file} 2>/dev/null | tr -d '\\n'); "
            f"if [ -n \"$h\" ]; then "
            + (_takeover(paths, lock_ttl, lock_token or "", lock_info, takeover_ledger) if lock_ttl else "s=; ") +
            f"printf 'lockinfo\\t%s\\n' \"$h\"; [ -z \"$s\" ] || {silent}; break; fi; "
            f"[ $i -lt 20 ] || break; i=$((i+1)); [ -d {lock} ] || continue; sleep 0.05; done"
        )
    parts += [
        _emit("user", '"${LOGNAME:-$(id -un)}"'),
        'p="$D"; while [ ! -d "$p" ]; do p=$(dirname "$p"); done; w=0; [ -w "$p" ] && w=1',
        'if [ -d "$D" ]; then ' + _emit("deploy_to", '"present $w"') + "; else " +
        _emit("deploy_to", '"absent $w"') + "; fi",
        'if [ -L "$D/current" ]; then k=link; [ -e "$D/current" ] || k=dangling; '
        'elif [ -d "$D/current" ]; then k=dir; elif [ -e "$D/current" ]; then k=file; else k=absent; fi',
        _emit("current", '"$k $(readlink "$D/current" 2>/dev/null || true)"'),
        # names are printed only when made of [A-Za-z0-9._-] (so no line can be forged); others are
        # counted. A directory without .deployer/ is another tool's release (foreign)
        "o=0; f=",
        'for r in "$D"/releases/* "$D"/releases/.tmp-*; do',
        '  [ -d "$r" ] || continue; n=${r##*/}',
        '  case $n in ""|-*|*[!A-Za-z0-9._-]*) o=$((o+1)); continue;; esac',
        '  [ ${#n} -le 128 ] || { o=$((o+1)); continue; }',
        '  case $n in .tmp-*) ' + _emit("stray", '"$n"') + "; continue;; .*) continue;; esac",
        '  s="$r/.deployer"',
        '  if [ ! -d "$s" ]; then ' + _emit("foreign", '"$n"') +
        '; f="$f $n"; [ ! -f "$r/REVISION" ] || set -- "$@" "$r/REVISION"; continue; fi',
        '  c=0; b=0; rb=0; m=0',
        '  [ -f "$s/complete" ] && c=1; [ -f "$s/bad" ] && b=1; [ -f "$s/rolled_back" ] && rb=1; [ -f "$s/migrated" ] && m=1',
        "  printf 'release\\t%s %s %s %s %s\\n' \"$n\" $c $b $rb $m",
        '  [ ! -f "$s/release.json" ] || set -- "$@" "$s/release.json"',
        "done",
        _emit("odd", "$o"),
        'if [ -n "$f" ]; then',
        "  (cd \"$D/releases\" && stat -c '%Y %n' -- $f 2>/dev/null) | "
        "while read -r t n; do printf 'fmtime\\t%s\\t%s\\n' \"$n\" \"$t\"; done",
        '  for l in "$D/revisions.log" "$D/.dep/releases_log"; do [ ! -f "$l" ] || set -- "$@" "$l"; done',
        "fi",
        f"if [ -d {lock} ]; then printf 'lock\\t\\n'; [ ! -f {info_file} ] || set -- \"$@\" {info_file}; fi",
        f"[ $# -eq 0 ] || awk -v f=\"$f\" {q(_META_AWK)} \"$@\" 2>/dev/null || true",
        _emit("free_kb", '"$(df -Pk "$p" | awk \'NR==2{print $4}\')"') if free_space else "",
        "m=''; for t in tar sha256sum mv ln readlink; do command -v $t >/dev/null 2>&1 || m=\"$m $t\"; done",
        _emit("missing_tools", '"$m"'),
    ]
    if artifact_sha:
        cached = q(paths.cached_artifact(artifact_sha))
        parts.append(f"c=0; [ -f {cached} ] && c=1; " + _emit("cached", '"$c"'))
    return _lines(*parts)


def _takeover(paths: Paths, ttl: int, token: str, info: str, ledger_line: str | None) -> str:
    """The lock-taking loop's step for a lock held by another run. `s` is how long ago its holder
    renewed it, by the host's clock (empty for a lock without a heartbeat: never stale). Past the
    TTL the lock is claimed (mkdir lock/claim: one claimant per lock), judged again under the
    claim, and made this run's in place: token, info and heartbeat replaced, so the old holder's
    next `held` fails. The dead run's temp dirs, partial upload and temp link are removed, the
    takeover reported and recorded. A claim on a lock that turned out live is withdrawn. A
    claimant killed between its mkdir and its rmdir (microseconds, on the host) would leave the
    claim behind, and that lock to `unlock`; the old holder waking exactly then would find its
    token replaced and stop."""
    lock, claim = q(paths.lock), q(posixpath.join(paths.lock, "claim"))
    age = f"b=$(stat -c %Y {q(paths.lock_beat)} 2>/dev/null) && s=$(( $(date +%s) - b )) || s=; "
    record = ""
    if ledger_line:
        pre, _, post = ledger_line.partition(TAKEOVER_MARK)
        record = (f"case $h in '{{'*'}}') j=$h;; *) j=null;; esac; "
                  f"{{ printf '%s{{\"holder\": %s, \"silent_s\": %s}}%s\\n' {q(pre)} \"$j\" \"$s\" {q(post)} "
                  f">> {q(paths.ledger)}; }} 2>/dev/null || :; ")
    return (
        age +
        f"if [ -n \"$s\" ] && [ \"$s\" -gt {int(ttl)} ]; then "
        f"if mkdir {claim} 2>/dev/null; then {age}"
        f"if [ -n \"$s\" ] && [ \"$s\" -gt {int(ttl)} ]; then "
        f"h=$(head -c 4096 {q(paths.lock_info)} 2>/dev/null | tr -d '\\n'); "
        f"t=; {{ read -r t < {q(paths.lock_token)}; }} 2>/dev/null || :; "
        f"printf '%s' {q(token)} > {lock}/token.new && mv -f {lock}/token.new {q(paths.lock_token)}; "
        f"printf '%s\\n' {q(info)} > {q(paths.lock_info)}; : > {q(paths.lock_beat)}; rmdir {claim}; "
        f"case $t in ''|*[!0-9A-Za-z_-]*) ;; *) rm -rf {q(paths.releases)}/.tmp-*-\"$t\" "
        f"{q(paths.cache)}/.part-\"$t\" {q(paths.cache)}/.part-\"$t\".sum {q(paths.deploy_to)}/.current-\"$t\";; esac; "
        f"printf 'takeover\\t%s\\t%s\\n' \"$s\" \"$h\"; {record}{_emit('lock_acquired', '1')}; break; fi; "
        f"rmdir {claim}; h=$(head -c 4096 {q(paths.lock_info)} 2>/dev/null | tr -d '\\n'); "
        f"elif [ $i -lt 20 ]; then i=$((i+1)); sleep 0.05; continue; fi; fi; "
    )


def lease(paths: Paths, token: str) -> str:
    """What every command of a run holding the lock starts with: `held` checks that the lock
    still holds this run's token and renews the lease (the heartbeat's mtime), else stops the
    script (LEASE_LOST). The scripts call `held` again right before each change they make (the
    rename into releases/N, the switch, deletions): a run whose lock was taken over changes
    nothing. The check and the change are two steps of one shell, microseconds apart; a takeover
    needs the lease silent for lock_ttl first. Renewing truncates the (empty) heartbeat, which
    sets its mtime (POSIX open O_TRUNC) with a builtin: no `touch` process per check."""
    lost = ("this run lost the lock on this host: its lease was not renewed for lock_ttl seconds and "
            "another run took it over; nothing more is changed here")
    return (f"held() {{ t=; {{ read -r t < {q(paths.lock_token)}; }} 2>/dev/null || :; "
            f"[ \"$t\" = {q(token)} ] || {{ echo {q(lost)} >&2; exit {LEASE_LOST}; }}; "
            f"{{ printf '' > {q(paths.lock_beat)}; }} 2>/dev/null || :; }}\nheld\n")


def unleased(script: str) -> str:
    """A script run on a host where this run already released the lock (a rollback putting back a
    host that switched and unlocked before another host failed): `held` has nothing to check."""
    return "held() { :; }\n" + script


# Each file given: "meta<TAB>N<TAB>" + a release's release.json, or "lockinfo<TAB>" + the lock's
# info; newlines dropped, at most 64 KiB (4 KiB for the lock) kept. For the foreign releases named
# in f: "frev<TAB>NAME<TAB>" + the first line of its REVISION, and the last line about it in
# Capistrano's revisions.log ("fcap") or Deployer's .dep/releases_log ("fdep").
_META_AWK = (
    'function flush() { if (out != "") print out; out = "" }\n'
    'BEGIN { k = split(f, names, " "); for (i = 1; i <= k; i++) foreign[names[i]] = 1 }\n'
    'FNR == 1 { flush(); cap = 65536; kind = ""; n = split(FILENAME, p, "/")\n'
    '  if (FILENAME ~ /\\/lock\\/info$/) { out = "lockinfo\\t"; cap = 4096 }\n'
    '  else if (FILENAME ~ /\\/REVISION$/) { kind = "rev"; out = "frev\\t" p[n - 1] "\\t" substr($0, 1, 200) }\n'
    '  else if (FILENAME ~ /\\/revisions\\.log$/) kind = "cap"\n'
    '  else if (FILENAME ~ /\\/releases_log$/) kind = "dep"\n'
    '  else out = "meta\\t" p[n - 2] "\\t"\n'
    '  len = 0 }\n'
    'kind == "rev" { next }\n'
    'kind == "cap" { if (match($0, /deployed as release [^ ]+/)) { r = substr($0, RSTART + 20, RLENGTH - 20)\n'
    '  if (r in foreign) capl[r] = substr($0, 1, 512) } next }\n'
    'kind == "dep" { if (match($0, /"release_name": *"[^"]*"/)) { r = substr($0, RSTART, RLENGTH)\n'
    '  sub(/^"release_name": *"/, "", r); sub(/"$/, "", r); if (r in foreign) depl[r] = substr($0, 1, 1024) } next }\n'
    '{ if (len < cap) { out = out substr($0, 1, cap - len); len += length($0) } }\n'
    'END { flush(); for (r in capl) print "fcap\\t" r "\\t" capl[r]; for (r in depl) print "fdep\\t" r "\\t" depl[r] }\n'
)


def prepare(paths: Paths, number: int, token: str, sha256: str, *, upload: bool, release_json: str,
            shared_dirs: tuple[str, ...] = (), shared_files: tuple[str, ...] = (),
            env_file: str | None = None, env_size: int = 0, link_from: LinkSource | None = None,
            generated: tuple[str, ...] = (), stream: bool = False) -> str:
    """Receive (or reuse) the artifact, verify its sha256, extract into a temp dir, link shared
    paths, mark complete, then rename into releases/N. Any failure removes the temp dir.

    With env_file, stdin starts with exactly env_size bytes of it, then the artifact when
    uploading: values never appear on a command line. The env becomes the release's own
    (releases/N/.deployer/env, 0600, `<env_file>` linking to it): the live env changes only when
    `current` does, and a rollback brings back the env its release ran with.
    With link_from (reusing the cached artifact only), the release is first made of hard links to
    that earlier release of the same artifact, kept only if it still matches (see _link_release);
    otherwise the cached artifact is extracted as usual. With stream (uploads only), tar extracts
    the upload as it arrives (see _streamed): for links where the upload is the slow part."""
    tmp = q(paths.tmp_release(number, token))
    part = q(paths.partial_artifact(token))
    cached = q(paths.cached_artifact(sha256))
    final = q(paths.release(number))
    env_tmp = q(paths.env_upload(token)) if env_file else ""
    leftovers = " ".join(filter(None, [tmp, part, f"{part}.sum" if stream else "", env_tmp]))
    parts = [
        f"trap {q(f'rm -rf {leftovers}')} EXIT",
        "trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM",
        f"mkdir -p {q(paths.releases)} {q(paths.shared)} {q(paths.cache)}",
    ]
    if env_file:
        parts += [f"(umask 077; head -c {int(env_size)} > {env_tmp})",
                  f"[ \"$(wc -c < {env_tmp})\" -eq {int(env_size)} ] || "
                  f"{{ echo 'env file truncated in transit' >&2; exit {SHA_MISMATCH}; }}"]
        shared_files = tuple(f for f in shared_files if f != env_file)     # the release's own, not shared
    parts.append(_DIGEST)
    differs = f"[ \"$got\" != {q(sha256)} ]"
    mismatch = (f"printf '%s %s %s\\n' {q(f'artifact sha256 mismatch on host: expected {sha256}, got')} \"$got\""
                f" '(truncated or corrupted in transit)' >&2; exit {SHA_MISMATCH}")
    # GNU tar reports a full disk only as "Wrote only N of M bytes": probe, and say it plainly
    full = (f"if ! head -c 65536 /dev/zero > {tmp}/.space-probe 2>/dev/null; then "
            f"echo {q(f'no space left on device: extracting release {number} into {paths.releases} failed')} >&2; fi")
    parts.append(f"mkdir {tmp}")
    if upload:
        # received whole and checked before tar reads it: on a fast link (hosts short of CPU)
        # that is faster than streaming into tar (see plan.releases.stream_upload)
        received = [
            f"cat > {part}",
            f"got=$(digest {part} | cut -d' ' -f1)",
            f"if {differs}; then {mismatch}; fi",
            f"mv -f {part} {cached}",
            f"rc=0; tar -xzf {cached} -C {tmp} --no-same-owner || rc=$?",
            f"if [ $rc -ne 0 ]; then {full}; exit $rc; fi",
        ]
        parts += _streamed(part, cached, tmp, differs, mismatch, full, received) if stream else received
        parts.append(_refuse_unsafe(tmp, number))
    else:
        # checked when it was stored, checksummed again while it is extracted (the sum goes to
        # this run's unused upload file, which the trap removes); a bad copy is removed
        extract = [
            f"digest {cached} > {part} 2>/dev/null &",
            f"rc=0; tar -xzf {cached} -C {tmp} --no-same-owner || rc=$?",
            "wait $! || :",
            f"got=$(cut -d' ' -f1 {part})",
            f"if {differs}; then rm -f {cached}; {mismatch}; fi",
            f"if [ $rc -ne 0 ]; then {full}; exit $rc; fi",
            _refuse_unsafe(tmp, number),
        ]
        if link_from:
            own = (env_file,) if env_file else ()
            shared = tuple(shared_dirs) + tuple(shared_files) + own
            extract = [_link_release(paths, link_from, tmp, shared, tuple(generated) + own),
                       "if [ $linked = 0 ]; then", *extract, "fi"]
        parts += extract
    parts += [
        f"mkdir -p {tmp}/.deployer",
        f"printf '%s\\n' {q(release_json)} > {tmp}/.deployer/release.json",
        f"printf '%s\\n' {q(token)} > {tmp}/.deployer/deploy_id",
    ]
    for rel in shared_dirs:
        parts.append(_link_shared(paths, tmp, rel, is_dir=True))
    for rel in shared_files:
        parts.append(_link_shared(paths, tmp, rel, is_dir=False))
    if env_file:
        inside, parent = f"{tmp}/{q(env_file)}", posixpath.dirname(env_file)
        parts += [f"mv -f {env_tmp} {tmp}/.deployer/env", f"rm -rf {inside}",
                  f"mkdir -p {tmp}/{q(parent)}" if parent else "",
                  f"ln -s {q(paths.release_env_link(env_file))} {inside}",
                  _shared_env(paths, env_file, token)]
    parts += [
        f": > {tmp}/.deployer/complete",
        f"held; mv -T {tmp} {final}",
        "trap - EXIT",
        f"[ $linked = 0 ] || {_emit('linked', str(link_from.number))}" if link_from else "",
        _emit("prepared", q(paths.release(number))),
    ]
    return _lines(*parts)


# `digest [FILE]`: its sha256 first on the line. OpenSSL's when it works (it uses the CPU's SHA
# instructions: far less CPU than coreutils), else sha256sum.
_DIGEST = ("if openssl dgst -sha256 -r </dev/null >/dev/null 2>&1; then digest() { openssl dgst -sha256 -r \"$@\"; }; "
           "else digest() { sha256sum \"$@\"; }; fi")


def _streamed(part: str, cached: str, tmp: str, differs: str, mismatch: str, full: str,
              received: list[str]) -> list[str]:
    """The upload stored at the link's pace while tar and the checksum read the growing file as
    fast as the host's CPU allows: a busy tar never holds up the upload (through a pipe it would,
    the SSH window staying shut until the pipe drains). tail ends once the writer did and all is
    read: new data wakes it at once (inotify), the writer's exit within `-s` (it polls the pid).
    A tail without --pid (busybox) takes the `received` steps instead."""
    follow = f"tail -s 0.01 --pid=$w -c +1 -f {part}"
    return [
        "if tail --pid=$$ -c 0 /dev/null 2>/dev/null; then",
        f": > {part}; exec 3<&0",
        f"cat <&3 >> {part} & w=$!",
        f"{follow} | digest > {part}.sum &",
        f"rc=0; {follow} | tar -xzf - -C {tmp} --no-same-owner || rc=$?",
        "wait $w || rc=$?; wait $! || :",
        f"got=$(cut -d' ' -f1 {part}.sum)",
        f"if [ $rc -ne 0 ] || {differs}; then {full}; fi",
        f"if {differs}; then {mismatch}; fi",
        "[ $rc -eq 0 ] || exit $rc",
        f"mv -f {part} {cached}; rm -f {part}.sum",
        "else",
        *received,
        "fi",
    ]


def _refuse_unsafe(tmp: str, number: int) -> str:
    """One pass over the extracted tree, before it is linked or becomes a release: a device, fifo,
    socket, setuid/setgid file or a symlink resolving outside it fails the step (and the trap
    removes it). So does anything in the deployer's own directory but the manifest (a forged
    `migrated` or `bad` marker). The client's member check refuses all of these; this holds even
    if one got past."""
    why = (f"release {number} refused: unsafe entry in the extracted artifact (device, fifo, socket, "
           "setuid/setgid file, or a link resolving outside the release): ")
    state, manifest = posixpath.split(MANIFEST)
    own = f"{tmp}/{q(state)}"
    forged = f"release {number} refused: the artifact brings entries of its own into {state}/ (reserved)"
    return "\n".join([
        # its entries listed by the shell (no process): anything below a subdirectory is refused
        # with that subdirectory; a manifest that is not a regular file (a link) is refused too
        f"if [ -L {own} ] || {{ [ -e {own} ] && [ ! -d {own} ]; }}; then echo {q(forged)} >&2; exit {UNSAFE_TREE}; fi",
        f"for e in {own}/* {own}/.[!.]* {own}/..?*; do [ -e \"$e\" ] || [ -L \"$e\" ] || continue; "
        f"if [ \"${{e##*/}}\" != {q(manifest)} ] || [ -L \"$e\" ] || [ ! -f \"$e\" ]; then "
        f"echo {q(forged)} >&2; exit {UNSAFE_TREE}; fi; done",
        f"T=$(readlink -f {tmp})",
        f"bad=$(find \"$T\" \\( -type b -o -type c -o -type p -o -type s -o \\( -type f -perm /6000 \\) \\) "
        "-printf '!%p\\n' -o -type l -exec readlink -m -- {} + | "
        "T=\"$T\" awk '$0 != ENVIRON[\"T\"] && index($0, ENVIRON[\"T\"] \"/\") != 1 { print; exit }')",
        f"if [ -n \"$bad\" ]; then echo {q(why)}\"${{bad#!}}\" >&2; exit {UNSAFE_TREE}; fi",
    ])


@dataclass(frozen=True)
class LinkSource:
    """An earlier release of the artifact being deployed, and the sha256 of its manifest."""
    number: int
    manifest_sha256: str


def _link_release(paths: Paths, source: LinkSource, tmp: str, shared: tuple[str, ...],
                  generated: tuple[str, ...]) -> str:
    """Fill the empty temp dir with hard links to the source release's files; set linked=1 only
    if what was linked is exactly the artifact as extracted: its manifest is the artifact's, its
    regular files are the manifest's paths, and none changed since the source was prepared (no
    file newer than its `complete` marker). Otherwise empty the temp dir again, linked=0.

    Not linked: the source's markers, hook-generated paths and __pycache__ (made anew, like after
    an extraction); shared paths are linked to shared/ again afterwards."""
    src = q(paths.release(source.number))
    complete = q(paths.release_state(source.number) + "/complete")
    manifest = q(posixpath.join(paths.release(source.number), MANIFEST))
    want, have = f"{tmp}/.deployer/want", f"{tmp}/.deployer/have"
    not_linked = " ".join(f"{tmp}/{q(rel)}" for rel in (".deployer", *generated))
    return "\n".join([
        "linked=0",
        f'if [ -f {complete} ] && '
        f'[ "$(sha256sum < {manifest} 2>/dev/null)" = {q(source.manifest_sha256 + "  -")} ] && '
        f'cp -al {src}/. {tmp}/ 2>/dev/null && rm -rf {not_linked} && '
        f'find {tmp} -name __pycache__ -prune -exec rm -rf {{}} + && '
        f'[ -z "$(find {tmp} ! -type d -newer {complete} -print -quit)" ] && '
        f'mkdir {tmp}/.deployer && ln {manifest} {tmp}/.deployer/ && '
        f'{_without_shared(manifest, shared)} | cut -c67- | LC_ALL=C sort > {want} && '
        f'(cd {tmp} && {_release_files(shared, ())}) > {have} && cmp -s {want} {have}; then',
        f"  linked=1; rm -f {want} {have}",
        f"else rm -rf {tmp}; mkdir {tmp}; fi",
    ])


def _shared_env(paths: Paths, env_file: str, token: str) -> str:
    """shared/<env_file> as a link to the live release's env (through `current`), for apps that
    read it there. A regular file there (one env shared by every release, as earlier versions and
    other tools keep it): each of our releases linked to it first gets its own copy (what it would
    run with); the file becomes the link only once no other tool's release links to it, which
    then keeps it as it is. Each step is one rename; the live content never changes."""
    shared, tmp = paths.shared_path(env_file), q(f".tmp-{token}")
    return "\n".join([
        f"s={q(shared)}",
        'if [ ! -L "$s" ]; then',
        '  theirs=0',
        f'  if [ -f "$s" ]; then w=$(readlink -f "$s"); for r in {q(paths.releases)}/*; do',
        f'    e="$r"/{q(env_file)}; o="$r/.deployer/env"',
        '    [ -L "$e" ] && [ "$(readlink -f "$e")" = "$w" ] || continue',
        '    if [ ! -d "$r/.deployer" ]; then theirs=1; continue; fi',
        f'    (umask 077; cp "$s" "$o"{tmp}); held; mv -f "$o"{tmp} "$o"',
        f'    ln -s {q(paths.release_env_link(env_file))} "$e"{tmp}; held; mv -Tf "$e"{tmp} "$e"',
        "  done; fi",
        '  if [ $theirs = 0 ]; then',
        f'    mkdir -p {q(posixpath.dirname(shared))}',
        f'    ln -sfn {q(paths.shared_env_link(env_file))} "$s"{tmp}; held; mv -Tf "$s"{tmp} "$s"',
        "  fi",
        "fi",
    ])


def write_env(paths: Paths, env_file: str, token: str, number: int, ledger: str | None = None) -> str:
    """config.push: stdin → release N's own env (0600, atomic), N being the live release; record
    it, release the lock. The release's <env_file> links to it (made so on hosts of earlier
    versions, whose releases shared one file)."""
    own = paths.release_env(number)
    env_tmp = q(f"{own}.tmp-{token}")
    link = q(posixpath.join(paths.release(number), env_file))
    target = paths.release_env_link(env_file)
    parent = posixpath.dirname(env_file)
    return _lines(
        f"trap {q('rm -f ' + env_tmp)} EXIT",
        f"[ -f {q(paths.release_state(number) + '/complete')} ] || "
        f"{{ echo {q(f'release {number} is not complete on this host')} >&2; exit {RELEASE_INCOMPLETE}; }}",
        _shared_env(paths, env_file, token),
        f"(umask 077; cat > {env_tmp})",
        f"held; mv -f {env_tmp} {q(own)}",
        f"mkdir -p {q(posixpath.join(paths.release(number), parent))}" if parent else "",
        f"if [ \"$(readlink {link} 2>/dev/null)\" != {q(target)} ]; then "
        f"ln -sfn {q(target)} {link}.tmp-{q(token)}; held; mv -Tf {link}.tmp-{q(token)} {link}; fi",
        append_ledger(paths, ledger) if ledger else "", _unlock(paths, token),
        _emit("written", q(own)))


def read_env(paths: Paths, env_file: str) -> str:
    """The live env file, as the live release has it (for config.diff; never printed as is)."""
    path = q(posixpath.join(paths.current, env_file))
    return _lines(f"if [ -f {path} ]; then cat {path}; fi")


def _link_shared(paths: Paths, tmp: str, rel: str, *, is_dir: bool) -> str:
    shared = q(paths.shared_path(rel))
    inside = f"{tmp}/{q(rel)}"
    parent = posixpath.dirname(rel)
    steps = []
    if is_dir:
        steps.append(f"mkdir -p {shared}")
    else:
        steps.append(f"[ -e {shared} ] || {{ echo {q('missing shared file ' + paths.shared_path(rel) + ': create it on the host')} >&2; exit {MISSING_SHARED}; }}")
    above = [posixpath.join(tmp, q(rel.rsplit("/", n)[0])) for n in range(rel.count("/"), 0, -1)]
    if above:
        # a link there (from the artifact) would make rm -rf and ln act wherever it points
        steps.append(f"for p in {' '.join(above)}; do if [ -L \"$p\" ]; then "
                     f"echo {q(f'refusing to link shared path {rel}: a parent in the release is a symlink')} >&2; "
                     f"exit {UNSAFE_TREE}; fi; done")
    steps.append(f"rm -rf {inside}")
    if parent:
        steps.append(f"mkdir -p {tmp}/{q(parent)}")
    steps.append(f"ln -s {shared} {inside}")
    return "; ".join(steps)


def switch(paths: Paths, number: int | str, token: str, *, mark_rolled_back: int | str | None = None,
           release_lock: bool = False, ledger: str | None = None) -> str:
    """Point current at releases/N atomically: a temp link renamed over it (rename(2)).

    A str names a foreign release (another tool's directory): it only has to be a directory, and
    nothing is written into it; mark_rolled_back marks only a release of ours."""
    current = q(paths.current)
    link = q(paths.tmp_current(token))
    if isinstance(number, str):
        ready = (f"[ -d {q(paths.release(number))} ] || "
                 f"{{ echo {q(f'release {number} is not on this host')} >&2; exit {RELEASE_INCOMPLETE}; }}")
    else:
        ready = (f"[ -f {q(paths.release_state(number) + '/complete')} ] || "
                 f"{{ echo {q(f'release {number} is not complete on this host')} >&2; exit {RELEASE_INCOMPLETE}; }}")
    parts = [
        f"if [ -e {current} ] && [ ! -L {current} ]; then "
        f"echo {q(paths.current + ' is a real directory or file, not a symlink: refusing to replace it')} >&2; "
        f"exit {CURRENT_NOT_LINK}; fi",
        ready,
        f"ln -sfn {q(paths.release_target(number))} {link}",
        f"held; mv -T {link} {current}",
    ]
    if not isinstance(number, str):
        rolled_back = q(paths.release_state(number) + "/rolled_back")
        parts.append(f"[ ! -e {rolled_back} ] || rm -f {rolled_back}")
    if isinstance(mark_rolled_back, int):
        marker = q(paths.release_state(mark_rolled_back) + "/rolled_back")
        parts.append(f"if [ -d {q(paths.release_state(mark_rolled_back))} ]; then date -u +%FT%TZ > {marker}; fi")
    if ledger:
        parts.append(append_ledger(paths, ledger))
    if release_lock:
        parts.append(_unlock(paths, token))
    parts.append(_emit("current", q(paths.release_target(number))))      # mv -T succeeded (set -e)
    return _lines(*parts)


def unswitch(paths: Paths, number: int) -> str:
    """Undo a first deploy's switch: remove current only if it points at releases/N."""
    current = q(paths.current)
    return _lines(f"if [ \"$(readlink {current} 2>/dev/null)\" = {q(paths.release_target(number))} ]; "
                  f"then held; rm -f {current}; fi")


def _unlock(paths: Paths, token: str) -> str:
    token_file = q(paths.lock_token)
    return (f"t=; {{ read -r t < {token_file}; }} 2>/dev/null || :; "
            f"if [ \"$t\" = {q(token)} ]; then rm -rf {q(paths.lock)}; fi")


CLEANUP_FAILED = "cleanup_failed"      # the field finish emits (with rm's status) when cleanup failed


def finish(paths: Paths, token: str, *, delete: list[str], keep_artifacts: list[str], ledger: str | None = None,
           done: str | None = None, failed: str | None = None) -> str:
    """Cleanup (release dirs chosen by the planner, stale cache entries), then release the lock.

    Ledger lines: `done` first, whatever the cleanup does (a deploy's outcome: its release is
    live already); then `ledger` if the cleanup succeeded, `failed` if it did not. A failed
    cleanup still releases the lock and exits 0, emitting `cleanup_failed<TAB>status` (its
    errors are on stderr), so it is never mistaken for a failure of what came before."""
    cleanup = []
    if delete:
        cleanup.append("rm -rf -- " + " ".join(q(posixpath.join(paths.releases, name)) for name in delete))
    keep = "|".join(q(f"{sha}.tar.gz") for sha in keep_artifacts) or "''"
    cleanup += [
        f"for f in {q(paths.cache)}/*.tar.gz {q(paths.cache)}/.part-*; do",
        f'  [ -e "$f" ] || continue; case "${{f##*/}}" in {keep}) ;; *) rm -f "$f";; esac',
        "done",
        # temp links of runs that died mid-switch: no run uses one while we hold the lock
        f'for l in {q(paths.deploy_to)}/.current-*; do if [ -L "$l" ]; then rm -f "$l"; fi; done',
    ]
    parts = [
        "held",
        append_ledger(paths, done) if done else "",
        "set +e", "(", "set -e", *cleanup, ")", "c=$?", "set -e",
        f"if [ $c -eq 0 ]; then {append_ledger(paths, ledger) if ledger else ':'}; "
        f"else {append_ledger(paths, failed) + '; ' if failed else ''}{_emit(CLEANUP_FAILED, '$c')}; fi",
        _unlock(paths, token),
    ]
    return _lines(*parts)


def switch_then_finish(switch_script: str, finish_script: str) -> str:
    """The switch, then the finish in a subshell of its own once the switch succeeded; the finish's
    exit status is emitted as `finished`, so a failed cleanup is never taken for a failed switch."""
    return f"{switch_script}set +e\n(\n{finish_script})\nf=$?\nset -e\n{_emit('finished', '$f')}\n"


def abort(paths: Paths, number: int | None, token: str, ledger: str | None = None) -> str:
    """Remove this run's temp dirs and its release N (only if this run created it), unlock."""
    parts = [f"rm -rf {q(paths.partial_artifact(token))} {q(paths.env_upload(token))} {q(paths.tmp_current(token))}"]
    if number is not None:
        release = q(paths.release(number))
        parts += [
            f"rm -rf {q(paths.tmp_release(number, token))}",
            f"if [ \"$(cat {release}/.deployer/deploy_id 2>/dev/null)\" = {q(token)} ] && "
            f"[ \"$(readlink {q(paths.current)} 2>/dev/null)\" != {q(paths.release_target(number))} ]; "
            f"then held; rm -rf {release}; fi",
        ]
    if ledger:
        parts.append(append_ledger(paths, ledger))
    parts.append(_unlock(paths, token))
    return _lines(*parts)


def unlock(paths: Paths, token: str | None = None, ledger: str | None = None) -> str:
    """Release the lock: only with the holder's token, or by force when token is None."""
    if token is not None:
        return _lines(_unlock(paths, token))
    info = q(paths.lock_info)
    return _lines(f"if [ -d {q(paths.lock)} ]; then printf 'removed\\t'; cat {info} 2>/dev/null | tr -d '\\n' || true; "
                  f"echo; rm -rf {q(paths.lock)}; {append_ledger(paths, ledger) if ledger else ':'}; fi")


def append_ledger(paths: Paths, line: str) -> str:
    """One O_APPEND write of one line (< PIPE_BUF): never torn, never interleaved."""
    return f"{{ [ -d {q(paths.state)} ] || mkdir -p {q(paths.state)}; }} && printf '%s\\n' {q(line)} >> {q(paths.ledger)}"


def read_ledger(paths: Paths, match: str | None = None) -> str:
    """The ledger's lines (only those containing `match`, when given)."""
    ledger = q(paths.ledger)
    pick = f"grep -F -- {q(match)} {ledger} || true" if match else f"cat {ledger}"
    return _lines(f"if [ -f {ledger} ]; then {pick}; fi")


def drift(paths: Paths, shared: tuple[str, ...] = (), generated: tuple[str, ...] = ()) -> str:
    """Compare current's files with the manifest that came in the artifact.

    Prints `modified|removed|added<TAB>path` lines, or `no_manifest`. Shared paths are skipped;
    so are paths hooks generate in the release (`generated`) and __pycache__ directories.
    """
    current = q(paths.current)
    parts = [
        f"cd {current}/ 2>/dev/null || {{ echo 'no current release' >&2; exit 1; }}",
        f"m={MANIFEST}",
        "[ -f $m ] || { echo no_manifest; exit 0; }",
        "t=$(mktemp -d); trap 'rm -rf \"$t\"' EXIT",
        _without_shared("$m", shared) + " > \"$t/m\"",
        "sha256sum -c \"$t/m\" 2>/dev/null | while IFS= read -r l; do case $l in "
        "*': OK') ;; *': FAILED open or read') printf 'removed\\t%s\\n' \"${l%: FAILED open or read}\";; "
        "*': FAILED') printf 'modified\\t%s\\n' \"${l%: FAILED}\";; esac; done",
        "cut -c67- \"$t/m\" | LC_ALL=C sort > \"$t/want\"",
        _release_files(shared, generated) + " > \"$t/have\"",
        "LC_ALL=C comm -13 \"$t/want\" \"$t/have\" | while IFS= read -r f; do printf 'added\\t%s\\n' \"$f\"; done",
        _emit("checked", '"$(wc -l < "$t/m" | tr -d " ")"'),
    ]
    return _lines(*parts)


def _without_shared(manifest: str, shared: tuple[str, ...]) -> str:
    """The manifest's lines, minus entries at or under a shared path (those live in shared/)."""
    if not shared:
        return f"cat {manifest}"
    return ("awk -v list=" + q("\n".join(shared)) + " 'BEGIN{n=split(list,s,\"\\n\")} "
            "{p=substr($0,67); keep=1; for(i=1;i<=n;i++) if(p==s[i] || index(p, s[i] \"/\")==1) keep=0; "
            f"if(keep) print}}' {manifest}")


def _release_files(shared: tuple[str, ...], generated: tuple[str, ...]) -> str:
    """The regular files of the release in the working directory that should match the manifest,
    sorted: not the deployer's own, shared, hook-generated or __pycache__ paths."""
    return ("find . \\( -path ./.deployer -o -name __pycache__" +
            "".join(f" -o -path {q('./' + rel)}" for rel in shared + generated) +
            " \\) -prune -o -type f -printf '%P\\n' | LC_ALL=C sort")


# -- pipeline steps: hooks, migrations, smoke, verify ----------------------------------------

def _assigns(env: dict[str, str]) -> list[str]:
    """NAME=value words; a name that is not a shell variable name never reaches the script."""
    bad = [k for k in env if not _NAME.fullmatch(k)]
    if bad:
        raise ValueError(f"not an environment variable name: {bad[0]!r}")
    return [f"{k}={q(str(v))}" for k, v in sorted(env.items())]


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def exports(env: dict[str, str]) -> str:
    return "; ".join(f"export {a}" for a in _assigns(env))


def as_user(run_as: str, env: dict[str, str], command: str) -> str:
    """sh -c COMMAND with env, as the deploy user or via `sudo -n -u RUN_AS` (never prompts)."""
    if not run_as:
        return (exports(env) + "; " if env else "") + f"sh -c {q(command)}"
    return " ".join(["sudo -n -u", q(run_as), "-- env", *_assigns(env), "sh -c", q(command)])


def in_release(paths: Paths, number: int | None, command: str, env: dict[str, str], run_as: str = "") -> str:
    """A user command (hook, smoke, restart, verify command) run by sh in releases/N, with the
    deploy's env; with no N (before_prepare: the release does not exist yet), in deploy_to."""
    where = q(paths.deploy_to if number is None else paths.release(number))
    if run_as:
        return _lines(f"cd {where}", "exec " + as_user(run_as, env, command))
    return _lines(f"cd {where}", exports(env) if env else "", f"exec sh -c {q(command)}")


def migrate(paths: Paths, number: int, command: str, env: dict[str, str], run_as: str = "") -> str:
    """Run the migration in releases/N; on success record it (digest of its output) in the release."""
    record = q(paths.release_state(number) + "/migrated")
    return _lines(
        f"cd {q(paths.release(number))}",
        "out=$(mktemp)",
        f"st=0; {as_user(run_as, env, command)} > \"$out\" 2>&1 || st=$?",
        'if [ $st -ne 0 ]; then tail -c 2000 "$out" >&2; rm -f "$out"; echo "migration failed (exit $st)" >&2; exit $st; fi',
        'cat "$out"; d=$(sha256sum < "$out" | cut -d" " -f1); rm -f "$out"',
        f"printf '{{\"digest\": \"%s\", \"at\": \"%s\"}}\\n' \"$d\" \"$(date -u +%FT%TZ)\" > {record}",
        _emit("migrated", '"$d"'),
    )


def unmigrate(paths: Paths, number: int, command: str, env: dict[str, str], run_as: str = "") -> str:
    """Run the down-migration with release N's code; then its record is removed."""
    return _lines(
        f"cd {q(paths.release(number))}",
        as_user(run_as, env, command),
        f"rm -f {q(paths.release_state(number) + '/migrated')}",
    )


def verify_http(url: str, *, status: int, body: str, timeout: int, retries: int, interval: float) -> str:
    """Fetch url from the host itself (curl, else python3) until it answers `status` (and has `body`)."""
    fetch_py = ("import sys,urllib.request as u,urllib.error as e\n"
                "try:\n r=u.urlopen(sys.argv[1],timeout=float(sys.argv[2])); c=r.status; b=r.read()\n"
                "except e.HTTPError as x: c=x.code; b=x.read()\n"
                "except Exception as x: print(0); sys.stderr.write(str(x)); sys.exit(0)\n"
                "open(sys.argv[3],'wb').write(b); print(c)")
    return _lines(
        'f=$(mktemp); trap \'rm -f "$f"\' EXIT; i=0',
        "while :; do",
        "  i=$((i+1))",
        f"  if command -v curl >/dev/null 2>&1; then code=$(curl -s -o \"$f\" -w '%{{http_code}}' --max-time {int(timeout)} {q(url)} || true)",
        f"  else code=$(python3 -c {q(fetch_py)} {q(url)} {int(timeout)} \"$f\" 2>/dev/null || echo 0); fi",
        f"  if [ \"$code\" = {int(status)} ] && grep -qF -- {q(body)} \"$f\"; then echo \"HTTP $code after $i attempt(s)\"; exit 0; fi"
        if body else
        f"  if [ \"$code\" = {int(status)} ]; then echo \"HTTP $code after $i attempt(s)\"; exit 0; fi",
        f"  if [ $i -ge {int(retries)} ]; then printf '%s %s%s (expected %s) after %s attempt(s)\\n' "
        f"{q(f'health check failed: {url} answered HTTP')} \"$code\" {q(' without ' + repr(body) if body else '')} "
        f"{int(status)} \"$i\" >&2; "
        "head -c 300 \"$f\" >&2; exit 1; fi",
        f"  sleep {float(interval):g}",
        "done",
    )


def mark_bad(paths: Paths, number: int, reason: str) -> str:
    """Mark release N bad: never a rollback target again, purged first by cleanup. The reason
    (a failed step's output) is written with every secret value masked."""
    state_dir = q(paths.release_state(number))
    return _lines(f"if [ -d {state_dir} ]; then held; printf '%s\\n' {q(redact(reason))} > {state_dir}/bad; fi")
