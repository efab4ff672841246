#!/usr/bin/python3
"""A minimal Python client of taskmoe-server (docs/api.md "Python").

Uses Debian's python3-grpcio, and python3-grpc-tools to compile the API's .proto files into
Python modules in a temporary directory at start-up, so there is nothing generated to keep in
sync with proto/.

    server/examples/python_client.py --target localhost:8500 --task en-de "Hello world."
    server/examples/python_client.py --task en-de --stream "Hello world."
    server/examples/python_client.py --list_tasks
    server/examples/python_client.py --health [SERVICE]

Exit status: 0 on success, 1 when an RPC fails (printed as "CODE: message"), 2 on bad usage.
"""

import argparse
import importlib.util
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

DEFAULT_PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                 "proto")


def compile_protos(proto_dir, out_dir):
    """Generates the API's Python modules into out_dir; returns (pb2, pb2_grpc, health_pb2)."""
    translation = os.path.join(proto_dir, "taskmoe", "v1", "translation.proto")
    health = os.path.join(proto_dir, "grpc", "health", "v1", "health.proto")
    for proto, plugins in ((translation, ["--python_out=" + out_dir,
                                          "--grpc_python_out=" + out_dir]),
                           (health, ["--python_out=" + out_dir])):
        if protoc.main(["grpc_tools.protoc", "-I" + proto_dir] + plugins + [proto]) != 0:
            raise RuntimeError("protoc failed on " + proto)
    sys.path.insert(0, out_dir)
    from taskmoe.v1 import translation_pb2, translation_pb2_grpc  # noqa: E402
    # The health module's package is grpc.health.v1, which the installed grpc package shadows,
    # so it is loaded from its file under another name; its RPC is called generically below.
    spec = importlib.util.spec_from_file_location(
        "taskmoe_health_pb2", os.path.join(out_dir, "grpc", "health", "v1", "health_pb2.py"))
    health_pb2 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(health_pb2)
    return translation_pb2, translation_pb2_grpc, health_pb2


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="localhost:8500", help="server host:port")
    parser.add_argument("--task", help="task id, e.g. en-de")
    parser.add_argument("--beam_size", type=int, default=0, help="0: server default (greedy)")
    parser.add_argument("--max_output_tokens", type=int, default=0, help="0: server default")
    parser.add_argument("--deadline_s", type=float, default=60.0, help="deadline of each RPC")
    parser.add_argument("--stream", action="store_true", help="stream tokens (TranslateStream)")
    parser.add_argument("--list_tasks", action="store_true", help="list the tasks")
    parser.add_argument("--health", action="store_true",
                        help="check health of the server, or of the service/task given")
    parser.add_argument("--proto_dir", default=DEFAULT_PROTO_DIR, help="the repository's proto/")
    parser.add_argument("texts", nargs="*", help="texts to translate (none: stdin lines)")
    args = parser.parse_args()
    if not (args.list_tasks or args.health or args.task):
        parser.error("--task is required to translate (or use --list_tasks / --health)")

    with tempfile.TemporaryDirectory(prefix="taskmoe-py-") as out_dir:
        pb2, pb2_grpc, health_pb2 = compile_protos(args.proto_dir, out_dir)
        with grpc.insecure_channel(args.target) as channel:
            stub = pb2_grpc.TranslationServiceStub(channel)
            try:
                if args.health:
                    check = channel.unary_unary(
                        "/grpc.health.v1.Health/Check",
                        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                        response_deserializer=health_pb2.HealthCheckResponse.FromString)
                    service = args.texts[0] if args.texts else (args.task or "")
                    reply = check(health_pb2.HealthCheckRequest(service=service),
                                  timeout=args.deadline_s)
                    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                    print(status)
                    return 0 if status == "SERVING" else 1
                if args.list_tasks:
                    reply = stub.ListTasks(pb2.ListTasksRequest(), timeout=args.deadline_s)
                    for t in reply.tasks:
                        print(f"{t.task}\t{t.source_language}->{t.target_language}\t{t.version}"
                              f"\t{t.parameters} parameters\t{t.precision}")
                    return 0
                texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
                options = pb2.DecodeOptions(beam_size=args.beam_size,
                                            max_output_tokens=args.max_output_tokens)
                # The task in a header too, so that a gateway can route the call by task
                # (docs/api.md, "Routing header").
                metadata = (("x-taskmoe-task", args.task),)
                if args.stream:
                    for text in texts:
                        request = pb2.TranslateStreamRequest(
                            task=args.task, text=text.encode("utf-8"), options=options)
                        replies = stub.TranslateStream(request, timeout=args.deadline_s,
                                                       metadata=metadata)
                        for message in replies:
                            if not message.done:
                                print(message.text_delta, end="", flush=True)
                        print()
                    return 0
                # texts are `bytes` in the API: the server, not the client library, checks
                # that they are UTF-8.
                request = pb2.TranslateRequest(task=args.task,
                                               texts=[t.encode("utf-8") for t in texts],
                                               options=options)
                reply = stub.Translate(request, timeout=args.deadline_s, metadata=metadata)
                for translation in reply.translations:
                    print(translation.text)
                return 0
            except grpc.RpcError as error:
                print(f"python_client: {error.code().name}: {error.details()}", file=sys.stderr)
                return 1


if __name__ == "__main__":
    sys.exit(main())
