#!/usr/bin/python3
"""Writes an HAProxy configuration that routes calls to task shards exactly as the routes of
deploy/k8s/overlays/sharded do: gRPC as its GRPCRoute and, with --http-bind, the HTTP/JSON API
as its HTTPRoute, by the `x-taskmoe-task` request header, each rule's tasks to its backend
Service. The routes come from the rendered overlay (kubectl kustomize), the manifests' own task
lists (tools/check-deploy.sh checks that both routes send exactly each shard's TASKS), so the
proxy and the manifests cannot drift apart.

  render-haproxy.py --bind 0.0.0.0:8500 \\
      --backend en-to-xx-taskmoe-server=10.0.0.5:8500 \\
      --backend xx-to-en-taskmoe-server=10.0.0.6:8500 \\
      [--http-bind 0.0.0.0:8080 --http-backend en-to-xx-taskmoe-server=10.0.0.5:8080 ...] \\
      > haproxy.cfg
  render-haproxy.py --list-tasks      # one line per backend: SERVICE TASK,TASK,...

A call whose header names no routed task (or that has none) gets NOT_FOUND from the proxy
itself (gRPC status, or HTTP 404 with the API's JSON error); a call to a shard with no server
up gets UNAVAILABLE (HTTP 503) at once. tools/shard-test.sh runs two servers behind it
(docs/operations.md, "Sharding tasks").
"""
import argparse
import json
import os
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OVERLAY = os.path.join(ROOT, "deploy", "k8s", "overlays", "sharded")
HEADER = "x-taskmoe-task"
UNROUTED_MESSAGE = (f"no shard serves the task in the {HEADER} header (or the call has none): "
                    f"send the task id of the request in it")


def routes(objects, kind):
    """[(service, [tasks])] of the one route of `kind`, one entry per rule, in rule order."""
    found = [o for o in objects if o["kind"] == kind]
    if len(found) != 1:
        sys.exit(f"render-haproxy: expected one {kind} in {OVERLAY}, found {len(found)}")
    result = []
    for i, rule in enumerate(found[0]["spec"]["rules"]):
        backends = rule.get("backendRefs", [])
        if len(backends) != 1:
            sys.exit(f"render-haproxy: {kind} rule {i} has {len(backends)} backends, not 1")
        tasks = [h["value"] for m in rule.get("matches", []) for h in m.get("headers", [])
                 if h.get("name") == HEADER and h.get("type", "Exact") == "Exact"]
        result.append((backends[0]["name"], tasks))
    return result


def tasks_by_backend(rules):
    merged = {}
    for service, tasks in rules:
        merged.setdefault(service, []).extend(tasks)
    return merged


def json_error(code, message):
    """The HTTP gateway's error body, quoted for HAProxy's configuration."""
    body = json.dumps({"error": {"code": code, "message": message}})
    return "'" + body + "'"


# (gRPC code, its name, the HTTP status the gateway maps it to): docs/api.md, HTTP/JSON.
NOT_FOUND = (5, "NOT_FOUND", 404)
UNAVAILABLE = (14, "UNAVAILABLE", 503)


def refusal(grpc, status, message, condition):
    """An answer of the proxy's own: for gRPC a status, trailers only (HTTP 200 with
    grpc-status), else the HTTP gateway's JSON error with its HTTP status."""
    number, name, http_status = status
    if grpc:
        return (f"    http-request return status 200 hdr grpc-status {number} "
                f"hdr grpc-message \"{message}\" {condition}")
    return (f"    http-request return status {http_status} content-type application/json "
            f"string {json_error(name, message)} {condition}")


def frontend(name, bind, rules, grpc, backend_suffix):
    """A frontend routing `rules`; `grpc`: answer in gRPC statuses, else in HTTP/JSON."""
    lines = ["", f"frontend {name}", f"    bind {bind}" + (" proto h2" if grpc else "")]
    acls = [f"rule_{i}" for i in range(len(rules))]
    for acl, (_, tasks) in zip(acls, rules):
        lines.append(f"    acl {acl} req.hdr({HEADER}) -m str {' '.join(tasks)}")
    # No rule matched: NOT_FOUND, as the server says of a task it does not serve.
    lines.append(refusal(grpc, NOT_FOUND, UNROUTED_MESSAGE, f"if !{' !'.join(acls)}"))
    # A shard with no server up: UNAVAILABLE at once, naming it (the client may retry later).
    for acl, (service, _) in zip(acls, rules):
        lines.append(refusal(grpc, UNAVAILABLE, f"no server of {service} is up; retry later",
                             f"if {acl} {{ nbsrv({service + backend_suffix}) eq 0 }}"))
    for acl, (service, _) in zip(acls, rules):
        lines.append(f"    use_backend {service + backend_suffix} if {acl}")
    return lines


def backends(rules, addresses, grpc, backend_suffix, flag):
    lines = []
    for service in tasks_by_backend(rules):
        if service not in addresses:
            sys.exit(f"render-haproxy: no {flag} {service}=HOST:PORT given")
        backend = service + backend_suffix
        lines += [
            "",
            f"backend {backend}",
            # Connection checks every 500 ms: a stopped shard is marked down within a second,
            # and its calls then fail at once instead of trying to connect.
            f"    server {backend}-0 {addresses[service]}" + (" proto h2" if grpc else "") +
            " check inter 500ms fall 1 rise 1",
        ]
    return lines


def parse_addresses(values, flag):
    addresses = {}
    for value in values:
        service, sep, address = value.partition("=")
        if not sep or ":" not in address:
            sys.exit(f"render-haproxy: {flag} '{value}' is not SERVICE=HOST:PORT")
        addresses[service] = address
    return addresses


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", default="0.0.0.0:8500", help="address:port for gRPC")
    parser.add_argument("--backend", action="append", default=[],
                        help="SERVICE=HOST:PORT: a GRPCRoute backend's gRPC address")
    parser.add_argument("--http-bind", help="address:port for HTTP/JSON (default: none)")
    parser.add_argument("--http-backend", action="append", default=[],
                        help="SERVICE=HOST:PORT: an HTTPRoute backend's HTTP address")
    parser.add_argument("--list-tasks", action="store_true",
                        help="print each backend and its tasks instead of a configuration")
    parser.add_argument("--rendered", help="the rendered overlay (default: kubectl kustomize)")
    args = parser.parse_args()
    if args.rendered:
        with open(args.rendered, encoding="utf-8") as f:
            rendered = f.read()
    else:
        rendered = subprocess.run(["kubectl", "kustomize", OVERLAY], check=True,
                                  capture_output=True, text=True).stdout
    objects = [o for o in yaml.safe_load_all(rendered) if o]
    grpc_rules = routes(objects, "GRPCRoute")
    if args.list_tasks:
        for service, tasks in tasks_by_backend(grpc_rules).items():
            print(service, ",".join(tasks))
        return
    lines = [
        "# Generated by deploy/haproxy/render-haproxy.py from the routes of",
        "# deploy/k8s/overlays/sharded: edit the overlay's task lists, not this file.",
        "global",
        "    maxconn 4096",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        # Calls (and streams) last as long as their deadline: the clients bound them.
        "    timeout client 10m",
        "    timeout server 10m",
        "    timeout http-request 10s",
        "    retries 1",
    ]
    lines += frontend("taskmoe_grpc", args.bind, grpc_rules, grpc=True, backend_suffix="")
    lines += backends(grpc_rules, parse_addresses(args.backend, "--backend"), grpc=True,
                      backend_suffix="", flag="--backend")
    if args.http_bind:
        http_rules = routes(objects, "HTTPRoute")
        lines += frontend("taskmoe_http", args.http_bind, http_rules, grpc=False,
                          backend_suffix="-http")
        lines += backends(http_rules, parse_addresses(args.http_backend, "--http-backend"),
                          grpc=False, backend_suffix="-http", flag="--http-backend")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
