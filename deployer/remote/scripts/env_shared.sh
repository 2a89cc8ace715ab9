# share_env: shared/<env_file> as a link to the live release's env (through `current`), for apps
# that read it there. A regular file there (one env shared by every release, as earlier versions
# and other tools keep it): each of our releases linked to it first gets its own copy (what it
# would run with); the file becomes the link only once no other tool's release links to it, which
# then keeps it as it is. Each step is one rename; the live content never changes.
# Inputs: SHARED_ENV (shared/<env_file>), SHARED_ENV_DIR, SHARED_ENV_LINK, ENV_FILE, ENV_LINK,
# RELEASES, TOKEN.
share_env() {
  s=$SHARED_ENV
  if [ ! -L "$s" ]; then
    theirs=0
    if [ -f "$s" ]; then w=$(readlink -f "$s"); for r in "$RELEASES"/*; do
      e="$r/$ENV_FILE"; o="$r/.deployer/env"
      if ! { [ -L "$e" ] && [ "$(readlink -f "$e")" = "$w" ]; }; then continue; fi
      if [ ! -d "$r/.deployer" ]; then theirs=1; continue; fi
      (umask 077; cp "$s" "$o.tmp-$TOKEN"); held; mv -f "$o.tmp-$TOKEN" "$o"
      ln -s "$ENV_LINK" "$e.tmp-$TOKEN"; held; mv -Tf "$e.tmp-$TOKEN" "$e"
    done; fi
    if [ $theirs = 0 ]; then
      mkdir -p "$SHARED_ENV_DIR"
      ln -sfn "$SHARED_ENV_LINK" "$s.tmp-$TOKEN"; held; mv -Tf "$s.tmp-$TOKEN" "$s"
    fi
  fi
}
