# verify_http.sh's fallback without curl: python3 -c THIS URL TIMEOUT FILE prints the HTTP status
# (0 when there is no answer) and writes the body to FILE.
import sys
import urllib.error
import urllib.request

try:
    r = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))
    code, body = r.status, r.read()
except urllib.error.HTTPError as x:
    code, body = x.code, x.read()
except Exception as x:
    print(0)
    sys.stderr.write(str(x))
    sys.exit(0)
with open(sys.argv[3], "wb") as f:
    f.write(body)
print(code)
