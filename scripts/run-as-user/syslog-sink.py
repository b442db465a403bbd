#!/usr/bin/python3
"""A stand-in for the syslog daemon, for the run-as-user tests on machines that have none (no /dev/log).

It receives datagrams on a Unix socket, as /dev/log does (`logger --socket SOCKET` sends there), and
appends each one as a line to LOGFILE, so tests can read what the helper logged. Started in the
background by scripts/run-as-user-setup.sh; it writes its pid to PIDFILE once the socket is ready.

usage: syslog-sink.py SOCKET LOGFILE PIDFILE
"""

import os
import socket
import sys


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit("usage: syslog-sink.py SOCKET LOGFILE PIDFILE")
    socket_path, log_path, pid_path = sys.argv[1:]
    try:
        os.unlink(socket_path)
    except FileNotFoundError:
        pass
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(socket_path)
    # Every user's logger must reach it, as every user reaches /dev/log.
    os.chmod(socket_path, 0o666)
    with open(pid_path + ".tmp", "w", encoding="ascii") as pid_file:
        pid_file.write(f"{os.getpid()}\n")
    os.replace(pid_path + ".tmp", pid_path)
    # Unbuffered, opened for appending: each record lands in one write, whole.
    with open(log_path, "ab", buffering=0) as log:
        while True:
            record = sink.recv(65536)
            log.write(record.rstrip(b"\n").replace(b"\n", b" ") + b"\n")


if __name__ == "__main__":
    main()
