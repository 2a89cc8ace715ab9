# stdin: a URL; argv: the file to write, the seconds under 1 KiB/s that make a stall, the seconds
# the whole download may take. Prints the HTTP status; exits as curl does: 22 on an HTTP error, 7
# when the store cannot be reached, 18 when the transfer breaks off, 28 when it stalls or outlasts
# its bound (a store that accepted the connection, then trickles or says nothing).
import signal
import sys
import time
import urllib.error as e
import urllib.request as u

SLOW = 1024  # bytes per second, as curl's --speed-limit
stall, bound = int(sys.argv[2]), int(sys.argv[3])
start = time.monotonic()
got = [0]
mark = [0, start + 1]  # bytes and time at the start of the current window: the first one starts
# after the connect had its stall seconds (a connect that times out is "cannot reach", not a stall)


class Slow(Exception):
    pass


def tick(*_):  # every second: past the bound, or a whole window of stall seconds under SLOW
    now = time.monotonic()
    if now - start > bound:
        raise Slow
    if now - mark[1] >= stall:
        if got[0] - mark[0] < SLOW * stall:
            raise Slow
        mark[:] = [got[0], now]


url = sys.stdin.readline().strip()
signal.signal(signal.SIGALRM, tick)
signal.setitimer(signal.ITIMER_REAL, 1, 1)
try:
    r = u.urlopen(url, timeout=stall)  # no byte for stall seconds is a stall too
except e.HTTPError as x:
    signal.setitimer(signal.ITIMER_REAL, 0)
    print(x.code)
    sys.exit(22)
except (Slow, TimeoutError):  # connected, and no answer in time (a refused or timed-out connect is a URLError)
    print("000")
    sys.exit(28)
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
            got[0] += len(chunk)
            f.write(chunk)
        signal.setitimer(signal.ITIMER_REAL, 0)
        if r.length:
            sys.exit(18)
except (Slow, TimeoutError):
    sys.exit(28)
except Exception:
    sys.exit(18)
