# weights, on a load balancer (role lb): the upstream's weights file replaced atomically (a temp
# file beside it, then mv), checked by `nginx -t`, then nginx reloaded gracefully. As root, or as
# the deploy user through `sudo -n` (the rule `deployer setup` writes on lb hosts).
# ACTION=set: CONTENT becomes the file; the content before the first step is kept in SAVED, once
# (a run killed mid-way leaves it there, and it stays the one to put back).
# ACTION=restore: SAVED is put back, then removed; without SAVED nothing changed: nothing to do.
# A file nginx -t rejects is put back as it was (nginx keeps serving it): exit 41, one line.
# Exit 42: no weights file, or its directory is not writable: nothing changed.
# Inputs: ACTION, WEIGHTS_FILE, SAVED, CONTENT, NGINX, SYSTEMCTL.
fail() { printf 'weights: %s\n' "$2" >&2; exit "$1"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
dir=${WEIGHTS_FILE%/*}
[ -f "$WEIGHTS_FILE" ] || fail 42 "no $WEIGHTS_FILE: the lb's upstream includes it (docs/canary-analysis.md)"
[ -w "$dir" ] || fail 42 "$dir is not writable by $(id -un): the weights file is written there"
if [ "$ACTION" = restore ] && [ ! -f "$SAVED" ]; then
  printf 'weights\tunchanged\n'
  exit 0
fi
base=${WEIGHTS_FILE##*/}
tmp=$dir/.$base.deployer-tmp
prev=$dir/.$base.deployer-prev
cp "$WEIGHTS_FILE" "$prev"
if [ "$ACTION" = set ]; then
  if [ ! -f "$SAVED" ]; then cp "$WEIGHTS_FILE" "$tmp"; mv -f "$tmp" "$SAVED"; fi
  printf '%s' "$CONTENT" > "$tmp"
else
  cp "$SAVED" "$tmp"
fi
mv -f "$tmp" "$WEIGHTS_FILE"
if ! out=$(as_root "$NGINX" -t 2>&1); then
  mv -f "$prev" "$WEIGHTS_FILE"
  fail 41 "nginx -t rejects the new weights, the previous ones are back: $(printf '%s' "$out" | tr '\n' ' ')"
fi
rm -f "$prev"
if [ -d /run/systemd/system ]; then
  as_root "$SYSTEMCTL" reload nginx.service || fail 43 "cannot reload nginx (sudo rule?)"
else
  as_root "$NGINX" -s reload || fail 43 "cannot reload nginx (sudo rule?)"
fi
if [ "$ACTION" = restore ]; then rm -f "$SAVED"; fi
printf 'weights\t%s\n' "$ACTION"
