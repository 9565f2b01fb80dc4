# SPDX-License-Identifier: MIT
"""The Python side of examples/authenticated_echo.c, with nothing but the
standard library: the same protocol (each message comes back upper-cased,
"bye" ends it), so either side can be C and the other Python.

  python3 authenticated_echo.py listen ADDRESS KEY
  python3 authenticated_echo.py connect ADDRESS KEY MSG...

ADDRESS in libproc's syntax: tcp:HOST:PORT, unix:/path, unix:@name.
"""
import sys
from multiprocessing.connection import AuthenticationError, Client, Listener


def to_python(address):
    if address.startswith("unix:@"):
        return "\0" + address[6:]
    if address.startswith("unix:"):
        return address[5:]
    host, port = address[4:].rsplit(":", 1)
    return (host, int(port))


def to_libproc(address):
    if isinstance(address, tuple):
        return "tcp:%s:%d" % address[:2]
    if isinstance(address, bytes):  # an abstract name
        address = address.decode()
    return "unix:@" + address[1:] if address.startswith("\0") else "unix:" + address


def listen(address, key):
    with Listener(to_python(address), authkey=key) as listener:
        print("ready", to_libproc(listener.address), flush=True)
        with listener.accept() as c:
            while True:
                m = c.recv_bytes()
                print('listener: got "%s"' % m.decode(), flush=True)
                if m == b"bye":
                    break
                c.send_bytes(m.upper())


def connect(address, key, msgs):
    with Client(to_python(address), authkey=key) as c:
        for m in msgs:
            c.send_bytes(m.encode())
            print('client: sent "%s", got "%s"' % (m, c.recv_bytes().decode()), flush=True)
        c.send_bytes(b"bye")


def main():
    mode, address, key = sys.argv[1], sys.argv[2], sys.argv[3].encode()
    try:
        if mode == "listen":
            listen(address, key)
        else:
            connect(address, key, sys.argv[4:])
    except AuthenticationError as e:
        print("refused:", e, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
