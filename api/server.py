"""Serving the API with uvicorn, bounded: request headers (httptools reads a header of any size
whole), concurrent connections, idle keep-alive."""

from __future__ import annotations

from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from config.settings import Settings

STATUS_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\n"


class BoundedHeadersProtocol(HttpToolsProtocol):
    """Counts the bytes of a request until its headers are complete and answers 431, closing
    the connection, once they pass ``max_header_bytes``: nothing larger is buffered."""

    max_header_bytes = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_bytes = 0
        self.reading_headers = True

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.header_bytes, self.reading_headers = 0, True

    def on_headers_complete(self) -> None:
        self.reading_headers = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self.reading_headers:
            self.header_bytes += len(data)
            if self.header_bytes > self.max_header_bytes:
                body = b"request headers too large"
                self.transport.write(
                    STATUS_431
                    + b"content-type: text/plain\r\ncontent-length: "
                    + str(len(body)).encode()
                    + b"\r\nconnection: close\r\n\r\n"
                    + body
                )
                self.transport.close()
                return
        super().data_received(data)


def serve(app: FastAPI, host: str, port: int, settings: Settings) -> None:
    protocol = type(
        "Protocol",
        (BoundedHeadersProtocol,),
        {"max_header_bytes": settings.api_max_header_bytes},
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        http=protocol,
        limit_concurrency=settings.api_limit_concurrency,
        timeout_keep_alive=settings.api_keep_alive_seconds,
        h11_max_incomplete_event_size=settings.api_max_header_bytes,
    )
