"""A store that accepts connections, then trickles: a TCP relay that forwards each request whole
and sends the response back `size` bytes every `every` seconds. Runs here or inside the store's
container (python3 only, no imports from the tests); exits after `limit` seconds whatever happens.

    python3 trickle_proxy.py BIND PORT_FILE TARGET_HOST TARGET_PORT EVERY SIZE LIMIT

It listens on BIND (an address) at a free port; once listening, it writes "PORT PID" to PORT_FILE.
"""

import os
import socket
import sys
import threading
import time


def relay(src: socket.socket, dst: socket.socket, every: float, size: int) -> None:
    try:
        while data := src.recv(65536):
            if not every:
                dst.sendall(data)
                continue
            for i in range(0, len(data), size):
                dst.sendall(data[i : i + size])
                time.sleep(every)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def serve(server: socket.socket, target: tuple[str, int], every: float, size: int) -> None:
    while True:
        client, _ = server.accept()
        upstream = socket.create_connection(target, timeout=10)
        upstream.settimeout(None)
        threading.Thread(target=relay, args=(client, upstream, 0, 0), daemon=True).start()
        threading.Thread(target=relay, args=(upstream, client, every, size), daemon=True).start()


def main(argv: list[str]) -> None:
    bind, port_file, host, port, every, size, limit = argv
    server = socket.create_server((bind, 0))
    threading.Thread(target=serve, args=(server, (host, int(port)), float(every), int(size)), daemon=True).start()
    with open(port_file + ".tmp", "w") as f:
        f.write(f"{server.getsockname()[1]} {os.getpid()}")
    os.rename(port_file + ".tmp", port_file)
    time.sleep(float(limit))
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
