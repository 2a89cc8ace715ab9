# deployer setup, as root: the deploy user, deploy_to and the shared dirs owned by it, the
# recipe's systemd unit (enabled), the sudoers drop-in, the nginx site. Each file is written only
# when its bytes, mode or owner differ (a temp file beside it, then mv); each change is reported
# as one `KEY<TAB>VALUE` line; with DRY_RUN nothing is written, the changes are only reported.
# Exit 40: this host cannot take it (visudo rejects the rule, ...); nothing was written. The
# caller checks for systemd first (remote/setup.py).
# Inputs: DRY_RUN, DEPLOY_USER, CREATE_USER (a created user gets the login's authorized_keys),
# DIRS (a word list), UNIT_NAME, UNIT_PATH, UNIT, SUDOERS_PATH, SUDOERS, SITE_PATH, SITE,
# SITE_LINK, DEFAULT_SITE (the distribution's default site link, disabled with a site), SYSTEMCTL,
# NGINX.
refuse() { printf 'setup: %s\n' "$1" >&2; exit 40; }
say() { printf '%s\t%s\n' "$1" "$2"; }
[ "$(id -u)" = 0 ] || refuse "not running as root"
[ -x "$SYSTEMCTL" ] || refuse "no $SYSTEMCTL"
[ -z "$SITE" ] || [ -x "$NGINX" ] || refuse "no $NGINX: install nginx (the recipe's site needs it)"
if ! id -u "$DEPLOY_USER" >/dev/null 2>&1 && [ -z "$CREATE_USER" ]; then
  refuse "no user $DEPLOY_USER (setup --user $DEPLOY_USER creates it)"
fi
if [ -n "$SUDOERS" ]; then  # the rule is checked before anything changes
  command -v visudo >/dev/null 2>&1 || refuse "no visudo: install sudo"
  t=$(mktemp)
  printf '%s' "$SUDOERS" > "$t"
  if ! out=$(visudo -cf "$t" 2>&1); then
    rm -f "$t"
    refuse "visudo rejects the sudo rule ($(printf '%s' "$out" | tr '\n' ' '))"
  fi
  rm -f "$t"
fi
live() { [ -z "$DRY_RUN" ]; }

if ! id -u "$DEPLOY_USER" >/dev/null 2>&1; then
  say user "$DEPLOY_USER"
  if live; then
    sh_=/bin/sh; [ ! -x /bin/bash ] || sh_=/bin/bash
    useradd --create-home --user-group --shell "$sh_" "$DEPLOY_USER"
    from=$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)/.ssh/authorized_keys
    home=$(getent passwd "$DEPLOY_USER" | cut -d: -f6)
    if [ -f "$from" ]; then
      install -d -o "$DEPLOY_USER" -g "$DEPLOY_USER" -m 0700 "$home/.ssh"
      install -o "$DEPLOY_USER" -g "$DEPLOY_USER" -m 0600 "$from" "$home/.ssh/authorized_keys"
    fi
  fi
fi
owner=$DEPLOY_USER:$(id -gn "$DEPLOY_USER" 2>/dev/null || printf '%s' "$DEPLOY_USER")

eval "set -- $DIRS"
for d in "$@"; do
  if [ -d "$d" ] && [ ! -L "$d" ] && [ "$(stat -c %U:%G "$d")" = "$owner" ]; then continue; fi
  say dir "$d"
  if live; then mkdir -p "$d"; chown "$owner" "$d"; fi
done

# put PATH MODE CONTENT [SUDOERS]: PATH holds CONTENT, root-owned with MODE; with SUDOERS (1),
# `visudo -cf` must accept the temp file (its name holds a '.': sudo skips it) before it is moved
# in. Sets put_changed.
put() {
  put_changed=''
  if [ -f "$1" ] && [ ! -L "$1" ] && [ "$(stat -c %a:%U:%G "$1")" = "$2:root:root" ] &&
    printf '%s' "$3" | cmp -s - "$1"; then
    return 0
  fi
  put_changed=1
  say file "$1"
  live || return 0
  mkdir -p "${1%/*}"
  tmp="${1%/*}/.${1##*/}.deployer-tmp"
  printf '%s' "$3" > "$tmp"
  chown root:root "$tmp"
  chmod "$2" "$tmp"
  if [ -n "${4:-}" ] && ! out=$(visudo -cf "$tmp" 2>&1); then
    rm -f "$tmp"
    printf 'setup: visudo rejects %s, not installed: %s\n' "$1" "$(printf '%s' "$out" | tr '\n' ' ')" >&2
    exit 1
  fi
  mv -f "$tmp" "$1"
}

if [ -n "$SUDOERS" ]; then put "$SUDOERS_PATH" 440 "$SUDOERS" 1; fi

if [ -n "$UNIT" ]; then
  put "$UNIT_PATH" 644 "$UNIT"
  if [ -n "$put_changed" ] && live; then "$SYSTEMCTL" daemon-reload; fi
  if [ -n "$put_changed" ] || ! "$SYSTEMCTL" is-enabled -q "$UNIT_NAME" 2>/dev/null; then
    say enable "$UNIT_NAME"
    if live; then "$SYSTEMCTL" enable -q "$UNIT_NAME"; fi
  fi
fi

if [ -n "$SITE" ]; then
  old=''
  if [ -f "$SITE_PATH" ]; then old=$(mktemp); cp -p "$SITE_PATH" "$old"; fi
  put "$SITE_PATH" 644 "$SITE"
  changed=$put_changed
  was_link=$(readlink "$SITE_LINK" 2>/dev/null || true)
  if [ "$was_link" != "$SITE_PATH" ]; then
    say link "$SITE_LINK"
    changed=1
    if live; then ln -sfn "$SITE_PATH" "$SITE_LINK"; fi
  fi
  # the distribution's default site also claims default_server on port 80: disabled
  default_was=$(readlink "$DEFAULT_SITE" 2>/dev/null || true)
  if [ -n "$default_was" ]; then
    say unlink "$DEFAULT_SITE"
    changed=1
    if live; then rm -f "$DEFAULT_SITE"; fi
  fi
  if [ -n "$changed" ]; then say reload nginx.service; fi
  if [ -n "$changed" ] && live; then
    if ! out=$("$NGINX" -t 2>&1); then  # put back what was there; nginx keeps serving it
      if [ -n "$old" ]; then mv -f "$old" "$SITE_PATH"; else rm -f "$SITE_PATH"; fi
      if [ -n "$was_link" ]; then ln -sfn "$was_link" "$SITE_LINK"; else rm -f "$SITE_LINK"; fi
      if [ -n "$default_was" ]; then ln -sfn "$default_was" "$DEFAULT_SITE"; fi
      printf 'setup: nginx -t rejects the site, put back as it was: %s\n' "$(printf '%s' "$out" | tr '\n' ' ')" >&2
      exit 1
    fi
    "$SYSTEMCTL" reload-or-restart nginx.service
  fi
  rm -f "$old"
fi
