# stdin: a URL; argv[1]: the file to write. Prints the HTTP status; exits 22 on an HTTP error and
# 7 when the store cannot be reached, as curl does.
import shutil
import sys
import urllib.error as e
import urllib.request as u

url = sys.stdin.readline().strip()
try:
    r = u.urlopen(url, timeout=10)
except e.HTTPError as x:
    print(x.code)
    sys.exit(22)
except Exception:
    print("000")
    sys.exit(7)
with r, open(sys.argv[1], "wb") as f:
    shutil.copyfileobj(r, f, 1 << 20)
print(r.status)
