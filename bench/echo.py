"""Baseline reflectors (usage: echo.py PORT [--epoll-thread]).

Default: a bare Python recvfrom/sendto UDP echo, blocking, the reference the goals use.
--epoll-thread: the same echo driven the way twamp-server's reflector is (a thread of its own
sleeping in epoll_wait, one non-blocking recvmsg with SO_TIMESTAMPNS and a TTL per readiness
report), with no TWAMP work: the difference to the bare echo is the cost of that structure, the
rest is the product's.
"""

import select
import socket
import sys
import threading

from twamp_common.udp_options import grow_buffers

SO_TIMESTAMPNS = 35
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
grow_buffers(sock, 4 * 1024 * 1024, 4 * 1024 * 1024)  # as twamp-server asks
sock.bind(("127.0.0.1", int(sys.argv[1])))

if "--epoll-thread" in sys.argv:
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.IPPROTO_IP, 12, 1)  # IP_RECVTTL
    sock.setblocking(False)
    space = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(4)

    def reflect() -> None:
        epoll = select.epoll()
        epoll.register(sock, select.EPOLLIN)
        recvmsg, sendto = sock.recvmsg, sock.sendto
        while True:
            for _fd, _mask in epoll.poll():
                try:
                    data, _ancdata, _flags, address = recvmsg(65535, space)
                except BlockingIOError:
                    continue
                sendto(data, address)

    threading.Thread(target=reflect, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()
else:
    print("ready", flush=True)
    recvfrom, sendto = sock.recvfrom, sock.sendto
    while True:
        data, address = recvfrom(65535)
        sendto(data, address)
