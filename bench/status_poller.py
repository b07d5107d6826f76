"""Scenario (i): an operator polling ``ipshift status`` in a loop, as fast as answers come.

Usage: status_poller.py SOCKET SECONDS MAX_REQUESTS. Sends ``{"cmd": "status"}`` on the daemon's
control socket (a unix socket: no network), reads the whole answer, and asks again at once; stops
after SECONDS or MAX_REQUESTS, whichever comes first, or when the daemon is gone. Prints the
number of answers and their sizes at the end.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import time


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    path, seconds, most = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    end = time.monotonic() + seconds
    started = time.monotonic()
    try:
        answers, failures, size = _poll(path, end, most)
    except KeyboardInterrupt:
        answers, failures, size = _counts
    print(json.dumps({"answers": answers, "failures": failures, "last_size": size,
                      "seconds": round(time.monotonic() - started, 1)}), flush=True)
    return 0


_counts = [0, 0, 0]


def _poll(path: str, end: float, most: int) -> tuple[int, int, int]:
    answers = failures = size = 0
    while time.monotonic() < end and answers + failures < most:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(10)
            s.connect(path)
            s.sendall(b'{"cmd": "status"}\n')
            chunks = []
            while True:
                data = s.recv(1 << 20)
                if not data:
                    break
                chunks.append(data)
            body = b"".join(chunks)
            size = len(body)
            json.loads(body)
            answers += 1
            _counts[:] = [answers, failures, size]
        except (OSError, ValueError):
            failures += 1
            time.sleep(0.05)
            _counts[:] = [answers, failures, size]
            if failures > 100:
                break
        finally:
            s.close()
    return answers, failures, size


if __name__ == "__main__":
    sys.exit(main())
