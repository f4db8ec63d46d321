"""A small OTLP traces receiver for the tests: decodes each POST to
/v1/traces (OTLP/HTTP), or each TraceService/Export call (OTLP/gRPC, with
grpcio's server), as an ExportTraceServiceRequest with the official
protobuf definitions (opentelemetry-proto) and appends one JSON line per
span to a file. Anything that does not decode is refused (HTTP 400, gRPC
INVALID_ARGUMENT) and a line {"error": ...}.

Usage: otlp_receiver.py PORT_FILE SPANS_FILE [grpc]   (binds 127.0.0.1:0,
writes the port to PORT_FILE once listening)
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

port_file, spans_file = sys.argv[1:3]
mode = sys.argv[3] if len(sys.argv) > 3 else "http"


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def spans(req, headers):
    lines = []
    for rs in req.resource_spans:
        resource = {a.key: value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                lines.append({
                    "resource": resource,
                    "scope": ss.scope.name,
                    "traceId": s.trace_id.hex(),
                    "spanId": s.span_id.hex(),
                    "parentSpanId": s.parent_span_id.hex(),
                    "traceState": s.trace_state,
                    "name": s.name,
                    "kind": Span.SpanKind.Name(s.kind),
                    "start": s.start_time_unix_nano,
                    "end": s.end_time_unix_nano,
                    "attributes": {a.key: value(a.value) for a in s.attributes},
                    "status": s.status.code,
                    "flags": s.flags,
                    "headers": headers,
                })
    return lines


def write(lines):
    with open(spans_file, "a") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        lines = []
        try:
            if self.path != "/v1/traces":
                raise ValueError(f"path {self.path}")
            if self.headers.get("content-type") != "application/x-protobuf":
                raise ValueError(f"content-type {self.headers.get('content-type')}")
            req = ExportTraceServiceRequest()
            req.ParseFromString(body)
            lines = spans(req, {k.lower(): v for k, v in self.headers.items()})
            status, out = 200, ExportTraceServiceResponse().SerializeToString()
        except Exception as e:  # the test reads it
            lines = [{"error": repr(e)}]
            status, out = 400, b""
        write(lines)
        self.send_response(status)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def ready(port):
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(port_file + ".tmp", port_file)


if mode == "grpc":
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            headers = {k.lower(): v for k, v in context.invocation_metadata()}
            try:
                lines = spans(request, headers)
            except Exception as e:  # the test reads it
                write([{"error": repr(e)}])
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, repr(e))
            write(lines)
            return ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    ready(port)
    server.wait_for_termination()
else:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ready(server.server_address[1])
    server.serve_forever()
