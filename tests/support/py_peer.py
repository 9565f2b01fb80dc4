# SPDX-License-Identifier: MIT
"""The Python end of tests/test_conn_python.c: CPython's own
multiprocessing.connection, as a client or a listener, facing libproc.

  py_peer.py client ADDRESS KEYHEX SIZE...   connect; for each SIZE send a
      message of that many bytes (byte i is (i + n) % 256 for the n-th) and
      check that it comes back the same; then one crafted frame in the 8-byte
      length form ("-1" and then the length), which must come back too;
      COUNT:N sends N small messages in a row (a thread reads the echoes).
  py_peer.py server ADDRESS KEYHEX           listen; print "ready ADDRESS" (the
      real address, in libproc's syntax); accept one client and echo every
      message until it leaves.

Exit codes: 0 all went as expected, 3 AuthenticationError, 1 anything else.
ADDRESS uses libproc's syntax: unix:/path, unix:@name, tcp:HOST:PORT.
"""
import os
import struct
import sys
import threading
from multiprocessing.connection import AuthenticationError, Client, Listener

# The address translation of the example that shows the pairing to users.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples"))
from authenticated_echo import to_libproc, to_python  # noqa: E402


def message(size, n):
    block = bytes((j + n) % 256 for j in range(256))
    return (block * (size // 256 + 1))[:size]


def burst(c, count):
    """count messages in a row; the echoes are read by a thread meanwhile, so
    that neither side's socket buffer fills while the other waits."""
    wrong = []

    def read():
        for i in range(count):
            if c.recv_bytes() != message(i % 50, i):
                wrong.append(i)

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(count):
        c.send_bytes(message(i % 50, i))
    reader.join()
    if wrong:
        sys.exit("burst messages %s came back wrong" % wrong[:10])


def client(address, key, sizes):
    c = Client(to_python(address), authkey=key)
    for n, size in enumerate(sizes):
        if size.startswith("COUNT:"):
            burst(c, int(size[6:]))
            continue
        m = message(int(size), n)
        c.send_bytes(m)
        if c.recv_bytes() != m:
            sys.exit("message %d of %s bytes came back wrong" % (n, size))
    c._send(struct.pack("!i", -1) + struct.pack("!Q", 5) + b"hello")
    if c.recv_bytes() != b"hello":
        sys.exit("the 8-byte length form did not come back")
    c.close()


def server(address, key):
    with Listener(to_python(address), authkey=key) as listener:
        print("ready", to_libproc(listener.address), flush=True)
        c = listener.accept()
        while True:
            try:
                m = c.recv_bytes()
            except EOFError:
                break
            c.send_bytes(m)


def main():
    mode, address, key = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
    try:
        if mode == "client":
            client(address, key, sys.argv[4:])
        else:
            server(address, key)
    except AuthenticationError as e:
        print("AuthenticationError:", e, file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
