# Each file given: "meta<TAB>N<TAB>" + a release's release.json, or "lockinfo<TAB>" + the lock's
# info; newlines dropped, at most 64 KiB (4 KiB for the lock) kept. For the foreign releases named
# in f: "frev<TAB>NAME<TAB>" + the first line of its REVISION, and the last line about it in
# Capistrano's revisions.log ("fcap") or Deployer's .dep/releases_log ("fdep").
function flush() { if (out != "") print out; out = "" }
BEGIN { k = split(f, names, " "); for (i = 1; i <= k; i++) foreign[names[i]] = 1 }
FNR == 1 { flush(); cap = 65536; kind = ""; n = split(FILENAME, p, "/")
  if (FILENAME ~ /\/lock\/info$/) { out = "lockinfo\t"; cap = 4096 }
  else if (FILENAME ~ /\/REVISION$/) { kind = "rev"; out = "frev\t" p[n - 1] "\t" substr($0, 1, 200) }
  else if (FILENAME ~ /\/revisions\.log$/) kind = "cap"
  else if (FILENAME ~ /\/releases_log$/) kind = "dep"
  else out = "meta\t" p[n - 2] "\t"
  len = 0 }
kind == "rev" { next }
kind == "cap" { if (match($0, /deployed as release [^ ]+/)) { r = substr($0, RSTART + 20, RLENGTH - 20)
  if (r in foreign) capl[r] = substr($0, 1, 512) } next }
kind == "dep" { if (match($0, /"release_name": *"[^"]*"/)) { r = substr($0, RSTART, RLENGTH)
  sub(/^"release_name": *"/, "", r); sub(/"$/, "", r); if (r in foreign) depl[r] = substr($0, 1, 1024) } next }
{ if (len < cap) { out = out substr($0, 1, cap - len); len += length($0) } }
END { flush(); for (r in capl) print "fcap\t" r "\t" capl[r]; for (r in depl) print "fdep\t" r "\t" depl[r] }
