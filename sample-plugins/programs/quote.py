#!/usr/bin/env python3
"""quote: a plugin program for plugin-host, in Python with nothing but its standard library.

It speaks the pluglet process protocol (host/src/process/PROTOCOL.md): length-prefixed frames
of a JSON header and a raw body, on the socket whose descriptor is in PLUGLET_PLUGIN_FD.

    GET  /quote          the next quote, in turn
    GET  /quote/{n}      quote number n (404 when there is none)
    POST /quote/echo     the request body, with its content-type
    GET  /quote/sleep    answers after ?ms=N milliseconds (calls run concurrently)

It has one hook (protocol 1.1), when its configuration asks for it: with "served_by", it lists
on_response in its welcome, and the host then sends it every response on its way out (whichever
plugin answered, unless its entry's `hook_paths` limits them), to which it adds the header
`x-quote-served-by` with that value.

Configuration: {"quotes": ["...", ...], "served_by": "..."} (both optional).
"""
import json
import os
import socket
import struct
import sys
import threading
import time
import urllib.parse

FD_VARIABLE = "PLUGLET_PLUGIN_FD"
DEFAULT_QUOTES = ["Simple is better than complex.", "Readability counts."]
ROUTES = [
    {"method": "GET", "path": "/quote"},
    {"method": "GET", "path": "/quote/{n}"},
    {"method": "POST", "path": "/quote/echo"},
    {"method": "GET", "path": "/quote/sleep"},
]


class Connection:
    """One frame in, one frame out; writes are serialized by a lock (calls answer from threads)."""

    def __init__(self, fd):
        self.sock = socket.socket(fileno=fd)
        self.lock = threading.Lock()

    def send(self, header, body=b""):
        encoded = json.dumps(header).encode()
        frame = struct.pack(">II", 4 + len(encoded) + len(body), len(encoded)) + encoded + body
        with self.lock:
            self.sock.sendall(frame)

    def _exactly(self, n):
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return bytes(data)

    def receive(self):
        """The next (header, body), or None when the host closed the connection."""
        prefix = self._exactly(8)
        if prefix is None:
            return None
        size, header_size = struct.unpack(">II", prefix)
        rest = self._exactly(size - 4)
        if rest is None:
            return None
        return json.loads(rest[:header_size]), rest[header_size:]


class Quotes:
    def __init__(self, quotes):
        self.quotes = quotes
        self.next = 0
        self.lock = threading.Lock()

    def answer(self, call, body):
        """(status, headers, body) for a call."""
        route = call["route"]
        if route == 0:
            with self.lock:
                quote = self.quotes[self.next % len(self.quotes)]
                self.next += 1
            return 200, [["content-type", "text/plain; charset=utf-8"]], quote.encode()
        if route == 1:
            n = dict(call["params"])["n"]
            if not n.isdigit() or int(n) >= len(self.quotes):
                return 404, [], b"no such quote\n"
            return 200, [], self.quotes[int(n)].encode()
        if route == 2:
            headers = dict(call["headers"])
            kind = headers.get("content-type", "application/octet-stream")
            return 200, [["content-type", kind]], body
        if route == 3:
            query = urllib.parse.parse_qs(call["query"])
            time.sleep(int(query.get("ms", ["0"])[0]) / 1000)
            return 200, [], b"slept\n"
        raise ValueError(f"no route {route}")


def serve(connection, quotes, served_by):
    def on_response(hook):
        # Unchanged but for one header; without `"body": true` the host keeps the body as it is.
        connection.send({"type": "hook_result", "id": hook["id"], "edits": [
            {"op": "add", "name": "x-quote-served-by", "value": served_by}]})

    def handle(call, body):
        try:
            status, headers, answer = quotes.answer(call, body)
            connection.send({"type": "response", "id": call["id"], "status": status,
                             "headers": headers}, answer)
        except Exception as error:  # the host answers 500 and logs the reason
            connection.send({"type": "response", "id": call["id"], "error": repr(error)})

    while True:
        frame = connection.receive()
        if frame is None:
            return 0  # the host closed the connection: the end
        header, body = frame
        kind = header["type"]
        if kind in ("start", "stop"):
            connection.send({"type": "result", "id": header["id"], "ok": True})
        elif kind == "ping":
            connection.send({"type": "pong", "id": header["id"]})
        elif kind == "call":
            threading.Thread(target=handle, args=(header, body), daemon=True).start()
        elif kind == "on_response":  # only sent when the welcome listed it
            on_response(header)


def main():
    if FD_VARIABLE not in os.environ:
        print("this is a plugin for plugin-host: it is started by plugin-host serve, not by hand",
              file=sys.stderr)
        return 2
    connection = Connection(int(os.environ[FD_VARIABLE]))
    hello, _ = connection.receive()
    quotes = hello["config"].get("quotes", DEFAULT_QUOTES)
    if not isinstance(quotes, list) or not quotes or not all(isinstance(q, str) for q in quotes):
        connection.send({"type": "refuse",
                         "error": "invalid configuration at `quotes`: expected a list of text"})
        return 1
    served_by = hello["config"].get("served_by")
    if served_by is not None and not isinstance(served_by, str):
        connection.send({"type": "refuse",
                         "error": "invalid configuration at `served_by`: expected text"})
        return 1
    welcome = {"type": "welcome", "version": 1, "name": "quote", "plugin_version": "1.0.0",
               "routes": ROUTES}
    if served_by is not None:
        # Hooks came with protocol 1.1: a host that speaks 1.0 would not send them.
        if hello.get("minor", 0) < 1:
            connection.send({"type": "refuse",
                             "error": "`served_by` needs a host that speaks protocol 1.1"})
            return 1
        welcome["hooks"] = ["on_response"]
    connection.send(welcome)
    connection.send({"type": "log", "level": 3, "message": f"serving {len(quotes)} quotes"})
    return serve(connection, Quotes(quotes), served_by)


if __name__ == "__main__":
    sys.exit(main())
