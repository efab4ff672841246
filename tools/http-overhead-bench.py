#!/usr/bin/python3
"""The HTTP/JSON gateway's latency against gRPC, side by side in one run: one server on the
demo repository, one client process, one short sentence per call, sequential calls (no
batching effects), alternating rounds of gRPC and HTTP so that drift on a shared machine hits
both. Prints the CPU, per-call latency percentiles of each transport and their difference.

Both clients are Python (grpcio over one channel; http.client over one kept-alive
connection), so the client's own cost is in both figures.

  tools/http-overhead-bench.py [--rounds 5] [--calls 200] [--task en-de] [--text "..."]
(needs build/release and python3-grpcio, python3-grpc-tools: tools/setup.sh test)
"""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "server", "examples"))
import grpc  # noqa: E402
from python_client import DEFAULT_PROTO_DIR, compile_protos  # noqa: E402


def cpu_model():
    """The CPU's model name and its widest vector extension (the ISA goes with every figure)."""
    model, flags = "unknown CPU", set()
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model} ({isa}, {os.cpu_count()} CPUs)"


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200, help="calls per transport per round")
    parser.add_argument("--task", default="en-de")
    parser.add_argument("--text", default="Open the file.")
    parser.add_argument("--threads", type=int, default=1, help="server compute threads")
    args = parser.parse_args()

    bin_dir = os.path.join(ROOT, "build", "release")
    work = tempfile.mkdtemp(prefix="http-overhead-")
    repository = os.path.join(work, "repository")
    subprocess.run([os.path.join(bin_dir, "tools", "taskmoe-extract"),
                    "--checkpoint=" + os.path.join(ROOT, "demo", "taskmoe"),
                    "--out=" + repository, "--tasks=" + args.task],
                   check=True, stdout=subprocess.DEVNULL)
    port_file = os.path.join(work, "ports")
    server = subprocess.Popen(
        [os.path.join(bin_dir, "server", "taskmoe-server"), "--model_repository=" + repository,
         "--host=127.0.0.1", "--port=0", "--metrics_port=-1", "--http_host=127.0.0.1",
         "--http_port=0", f"--threads={args.threads}", "--port_file=" + port_file],
        stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(port_file):
            if server.poll() is not None:
                sys.exit("the server exited")
            time.sleep(0.05)
        ports = dict(line.split("=") for line in open(port_file).read().split())
        os.makedirs(os.path.join(work, "gen"))
        pb2, pb2_grpc, _ = compile_protos(DEFAULT_PROTO_DIR, os.path.join(work, "gen"))
        channel = grpc.insecure_channel(f"127.0.0.1:{ports['grpc_port']}")
        stub = pb2_grpc.TranslationServiceStub(channel)
        request = pb2.TranslateRequest(task=args.task, texts=[args.text.encode()])
        metadata = (("x-taskmoe-task", args.task),)
        connection = http.client.HTTPConnection("127.0.0.1", int(ports["http_port"]), timeout=60)
        # Bytes, so that http.client sends headers and body in one write (as curl does).
        body = json.dumps({"task": args.task, "texts": [args.text]}).encode()
        headers = {"Content-Type": "application/json", "x-taskmoe-task": args.task}

        def grpc_call():
            return stub.Translate(request, timeout=60, metadata=metadata).translations[0].text

        def http_call():
            connection.request("POST", "/v1/translate", body, headers)
            reply = connection.getresponse()
            data = reply.read()
            if reply.status != 200:
                sys.exit(f"HTTP {reply.status}: {data[:200]}")
            return json.loads(data)["translations"][0]["text"]

        # Ready, warm, and the same answer on both.
        deadline = time.time() + 120
        while True:
            try:
                grpc_text = grpc_call()
                break
            except grpc.RpcError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        if http_call() != grpc_text:
            sys.exit("the transports translate differently")
        for _ in range(50):
            grpc_call()
            http_call()

        latencies = {"gRPC": [], "HTTP/JSON": []}
        for _ in range(args.rounds):
            for name, call in (("gRPC", grpc_call), ("HTTP/JSON", http_call)):
                # A fresh connection, made by an untimed call: the server closes kept-alive
                # connections idle for 2 s (http_gateway.cc), and the gRPC round takes longer.
                connection.close()
                call()
                for _ in range(args.calls):
                    start = time.perf_counter()
                    call()
                    latencies[name].append((time.perf_counter() - start) * 1000)
        print(f"CPU: {cpu_model()}; server --threads={args.threads}; task {args.task}, "
              f"text {args.text!r} -> {grpc_text!r}; {args.rounds} rounds x {args.calls} "
              f"sequential calls per transport")
        print(f"{'transport':<10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
        for name, values in latencies.items():
            print(f"{name:<10} {percentile(values, 0.5):8.3f} {percentile(values, 0.9):8.3f} "
                  f"{percentile(values, 0.99):8.3f} {statistics.mean(values):8.3f}")
        g, h = latencies["gRPC"], latencies["HTTP/JSON"]
        print(f"HTTP/JSON - gRPC: p50 {percentile(h, 0.5) - percentile(g, 0.5):+.3f} ms "
              f"({percentile(h, 0.5) / percentile(g, 0.5):.2f}x), mean "
              f"{statistics.mean(h) - statistics.mean(g):+.3f} ms")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
