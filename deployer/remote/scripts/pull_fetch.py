# stdin: a URL; argv[1]: the file to write. Prints the HTTP status; exits 22 on an HTTP error, 7
# when the store cannot be reached and 18 when the transfer breaks off, as curl does.
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
print(r.status, flush=True)
try:  # written as it arrives (the host extracts the growing file), the length checked at the end
    with r, open(sys.argv[1], "wb", buffering=0) as f:
        while True:
            chunk = r.read1(1 << 16)
            if not chunk:
                break
            f.write(chunk)
        if r.length:
            sys.exit(18)
except Exception:
    sys.exit(18)
