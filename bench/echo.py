"""Baseline reflectors (usage: echo.py PORT [--asyncio]).

Default: a bare Python recvfrom/sendto UDP echo, blocking, the reference the goals use.
--asyncio: the same echo driven the way twamp-server's reflector is (asyncio add_reader,
non-blocking recvmsg with SO_TIMESTAMPNS and a TTL, drain until EAGAIN), with no TWAMP work: the
difference to the bare echo is the cost of the event-loop structure, the rest is the product's.
"""

import socket
import sys

SO_TIMESTAMPNS = 35
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for force, plain in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, 4 * 1024 * 1024)  # as twamp-server asks
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, plain, 4 * 1024 * 1024)
sock.bind(("127.0.0.1", int(sys.argv[1])))

if "--asyncio" in sys.argv:
    import asyncio

    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.IPPROTO_IP, 12, 1)  # IP_RECVTTL
    sock.setblocking(False)
    space = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(4)

    def drain() -> None:
        recvmsg, sendto = sock.recvmsg, sock.sendto
        for _ in range(256):
            try:
                data, _ancdata, _flags, address = recvmsg(65535, space)
            except BlockingIOError:
                return
            sendto(data, address)

    async def main() -> None:
        asyncio.get_running_loop().add_reader(sock, drain)
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
else:
    print("ready", flush=True)
    recvfrom, sendto = sock.recvfrom, sock.sendto
    while True:
        data, address = recvfrom(65535)
        sendto(data, address)
