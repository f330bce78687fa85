"""hello-python: a wasi:http/proxy component written in Python.

Routes: `GET /` greets; `/echo` returns the request body; `GET /api/info`
returns JSON describing the request; anything else is 404.
"""

import json

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingBody,
    IncomingRequest,
    Method_Get,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


def respond(response_out: ResponseOutparam, status: int, content_type: str, body: bytes) -> None:
    headers = Fields.from_list([
        ("content-type", content_type.encode()),
        ("content-length", str(len(body)).encode()),
    ])
    response = OutgoingResponse(headers)
    response.set_status_code(status)
    outgoing = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    with outgoing.write() as stream:
        for start in range(0, len(body), 4096):
            stream.blocking_write_and_flush(body[start:start + 4096])
    OutgoingBody.finish(outgoing, None)


def read_body(request: IncomingRequest) -> bytes:
    body = request.consume()
    data = b""
    with body.stream() as stream:
        while True:
            try:
                data += stream.blocking_read(65536)
            except Exception:
                break
    IncomingBody.finish(body)
    return data


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path_with_query = request.path_with_query() or "/"
        path, _, query = path_with_query.partition("?")
        is_get = isinstance(request.method(), Method_Get)
        if is_get and path == "/":
            respond(response_out, 200, "text/plain", b"hello from python wasi:http\n")
        elif path == "/echo":
            respond(response_out, 200, "application/octet-stream", read_body(request))
        elif is_get and path == "/api/info":
            info = {"service": "hello-python", "path": path, "query": query}
            respond(response_out, 200, "application/json", json.dumps(info).encode())
        else:
            respond(response_out, 404, "text/plain", b"not found\n")
