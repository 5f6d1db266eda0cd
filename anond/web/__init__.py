"""`anond web`: the review UI (see `anond.web.app`), alone or inside `anond run` ([web] enabled).

It reads and writes only the review area (`anond.review`) and the claimed originals it shows,
so it runs as the service's user beside the service or in it. Uvicorn serves it on a socket
bound here (so port 0 works and the real port is logged); its own access log is off: ours
(`web.request`) names routes and job ids, never paths.
"""

from __future__ import annotations

import argparse
import getpass
import socket
import threading

from .. import log as anond_log


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hash-password", action="store_true",
                        help="read a password (twice) and print the [web] password_hash for it")


def main(args: argparse.Namespace) -> int:
    from ..config import load_settings

    if args.hash_password:
        from .auth import hash_password

        first = getpass.getpass("password: ")
        if len(first) < 10 or first != getpass.getpass("again: "):
            print("anond web: passwords differ or are shorter than 10 characters")
            return 2
        print(hash_password(first))
        return 0
    settings = load_settings(args.config)
    anond_log.configure(args.log_level or settings.service.log_level)
    server = WebServer(settings, anond_log.get())
    server.start()
    try:
        server.thread.join()
    except KeyboardInterrupt:
        server.stop()
    return 0


class WebServer:
    """Uvicorn in a thread of its own, on a socket bound before it starts."""

    def __init__(self, settings, log, wake: threading.Event | None = None) -> None:
        import uvicorn

        from .app import Review, build_app

        web = settings.web
        family = socket.AF_INET6 if web.address.version == 6 else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((str(web.address), web.port))
        self.sock.listen(128)  # connections wait in the backlog until uvicorn serves them
        self.port = self.sock.getsockname()[1]
        self.log = log
        self.review = Review(settings, log, wake)
        config = uvicorn.Config(build_app(self.review), log_config=None, access_log=False,
                                lifespan="off", server_header=False, date_header=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, name="web", daemon=True)
        self.address = str(web.address)

    def _serve(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self) -> None:
        self.thread.start()
        token = self.review.gate.token_path
        self.log.info("web.listening", address=self.address, port=self.port,
                      login="token_file" if token else "password")

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()
