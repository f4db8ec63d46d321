"""An external authorization service for the tests, in both of Envoy's
modes: the gRPC service envoy.service.auth.v3.Authorization/Check (with
Envoy's published definitions, the xds-protos package, and grpcio's
server) or plain HTTP. Each check is appended to a file as one JSON line
(what the service was told); the answer depends on the request's
Authorization header:

  Bearer good    allowed: upstream headers x-user (set), x-groups
                 (appended), x-remove-me removed (gRPC); x-authz /
                 x-ratelimit-remaining for the client
  Bearer anon    allowed, and nothing else said
  Bearer slow    allowed after 3 s (a timeout test)
  Bearer broken  gRPC: UNAVAILABLE with no denial; HTTP: a 64 KB+ body
  Bearer redirect  HTTP: 302 to a login page
  anything else  denied: 401, WWW-Authenticate, a JSON body

Usage: ext_authz_server.py PORT_FILE CHECKS_FILE grpc|http   (binds
127.0.0.1:0, writes the port to PORT_FILE once listening)
"""

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port_file, checks_file, mode = sys.argv[1:4]
DENIAL_BODY = '{"error":"who are you"}'


def write(line):
    with open(checks_file, "a") as f:
        f.write(json.dumps(line) + "\n")


def ready(port):
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(port_file + ".tmp", port_file)


if mode == "grpc":
    # Envoy's definitions, kept apart from the tools' virtualenv (.ci/pytools)
    sys.path.insert(0, os.path.join(os.path.dirname(sys.executable), "..", "xds"))
    from concurrent import futures

    import grpc
    from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
    from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
    from envoy.type.v3.http_status_pb2 import HttpStatus
    from google.protobuf.json_format import MessageToDict
    from google.protobuf.wrappers_pb2 import BoolValue
    from google.rpc import code_pb2, status_pb2

    def option(key, value, append=None):
        o = HeaderValueOption(header=HeaderValue(key=key, value=value))
        if append is not None:
            o.append.CopyFrom(BoolValue(value=append))
        return o

    class Authorization(external_auth_pb2_grpc.AuthorizationServicer):
        def Check(self, request, context):
            write({"check": MessageToDict(request),
                   "metadata": {k.lower(): v for k, v in context.invocation_metadata()}})
            http = request.attributes.request.http
            # Flex's default: raw header lines (header_map); text (the
            # headers map) with FLEX_HEADER_RAW_VALUE_ENABLE=false
            auth = http.headers.get("authorization", "")
            for h in http.header_map.headers:
                if h.key == "authorization":
                    auth = h.raw_value.decode("latin-1")
            if auth == "Bearer slow":
                time.sleep(3)
            if auth in ("Bearer good", "Bearer slow"):
                return external_auth_pb2.CheckResponse(
                    status=status_pb2.Status(code=code_pb2.OK),
                    ok_response=external_auth_pb2.OkHttpResponse(
                        headers=[option("x-user", "alice"), option("x-groups", "admin", True)],
                        headers_to_remove=["x-remove-me"],
                        response_headers_to_add=[option("x-authz", "ok")],
                    ),
                )
            if auth == "Bearer anon":
                return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))
            if auth == "Bearer broken":
                context.abort(grpc.StatusCode.UNAVAILABLE, "the policy store is down")
            return external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
                denied_response=external_auth_pb2.DeniedHttpResponse(
                    status=HttpStatus(code=401),
                    headers=[option("www-authenticate", 'Bearer realm="shop"'),
                             option("content-type", "application/json")],
                    body=DENIAL_BODY,
                ),
            )

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(Authorization(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    ready(port)
    server.wait_for_termination()
else:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, status, headers, body=b""):
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def check(self):
            length = int(self.headers.get("content-length", "0") or "0")
            body = self.rfile.read(length) if length else b""
            write({"method": self.command, "path": self.path, "body": len(body),
                   "headers": [[k.lower(), v] for k, v in self.headers.items()]})
            auth = self.headers.get("authorization", "")
            if auth == "Bearer slow":
                time.sleep(3)
            if auth in ("Bearer good", "Bearer slow"):
                self.answer(200, [("x-user", "alice"), ("x-groups", "admin"),
                                  ("x-ratelimit-remaining", "9"), ("x-other", "leak")])
            elif auth == "Bearer anon":
                self.answer(200, [])
            elif auth == "Bearer redirect":
                self.answer(302, [("location", "https://login.example/"), ("x-debug", "internal")])
            elif auth == "Bearer broken":
                self.answer(403, [("content-type", "text/plain")], b"x" * (70 * 1024))
            else:
                self.answer(401, [("www-authenticate", 'Bearer realm="shop"'),
                                  ("content-type", "application/json"), ("x-debug", "internal")],
                            DENIAL_BODY.encode())

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = check

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    ready(server.server_address[1])
    server.serve_forever()
