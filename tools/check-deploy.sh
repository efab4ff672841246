#!/usr/bin/env bash
# Offline checks of deploy/ (run by tools/test.sh; needs no cluster, registry or network):
#   - every kustomization under deploy/k8s (the base and each overlay) renders with
#     `kubectl kustomize`, to YAML that parses into objects with apiVersion, kind and name;
#     the GRPCRoute and the HTTPRoute route exactly each shard's tasks (TASKS) to that
#     shard's Service, on its grpc and http port;
#   - yamllint passes on deploy/ with deploy/.yamllint;
#   - promtool accepts deploy/prometheus/prometheus.yml and its alerting rules;
#   - deploy/grafana/*.json parse as Grafana dashboards, and every metric name that they and
#     the rules use is one taskmoe-server exports (the table in docs/api.md, "Metrics").
# Packages: kubectl (Debian's kubernetes-client), yamllint, prometheus (promtool) and
# python3-yaml, all in `tools/setup.sh test`.
set -euo pipefail
cd "$(dirname "$0")/.."

python=/usr/bin/python3
for tool in kubectl yamllint promtool "$python"; do
  if ! command -v "$tool" >/dev/null; then
    echo "check-deploy: $tool is missing (tools/setup.sh test installs it)" >&2
    exit 1
  fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/check-deploy.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. Render every kustomization: the directories holding a kustomization.yaml.
mapfile -t kustomizations < <(find deploy/k8s -name kustomization.yaml -printf '%h\n' | sort)
if ((${#kustomizations[@]} == 0)); then
  echo "check-deploy: no kustomization.yaml under deploy/k8s" >&2
  exit 1
fi
for dir in "${kustomizations[@]}"; do
  out="$work/$(echo "$dir" | tr '/' '_').yaml"
  # Newer kustomize versions print deprecation warnings for fields that kubectl 1.20's
  # kustomize v2.0.3 needs; keep them out of the log unless rendering fails.
  if ! kubectl kustomize "$dir" >"$out" 2>"$work/kustomize.err"; then
    echo "check-deploy: kubectl kustomize $dir failed:" >&2
    cat "$work/kustomize.err" >&2
    exit 1
  fi
  "$python" - "$dir" "$out" <<'EOF'
import sys
import yaml

directory, path = sys.argv[1], sys.argv[2]
with open(path, encoding="utf-8") as f:
    objects = [o for o in yaml.safe_load_all(f) if o is not None]
if not objects:
    sys.exit(f"check-deploy: {directory} renders no objects")
for o in objects:
    for key in ("apiVersion", "kind"):
        if not o.get(key):
            sys.exit(f"check-deploy: {directory}: an object without {key}: {o}")
    if not o.get("metadata", {}).get("name"):
        sys.exit(f"check-deploy: {directory}: a {o['kind']} without a name")
kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)

# Each route (GRPCRoute for gRPC, HTTPRoute for the HTTP/JSON API) must route exactly the tasks
# each shard serves (TASKS of the shard's ConfigMap) to that shard's Service, on the Service's
# port for its protocol, within the Gateway API's limits on rules and matches.
shard_label = "taskmoe.dev/shard"
port_name_of_route = {"GRPCRoute": "grpc", "HTTPRoute": "http"}
services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
shard_of_service = {name: o["metadata"].get("labels", {}).get(shard_label)
                    for name, o in services.items()}
tasks_of_shard = {}
for o in objects:
    shard = o["metadata"].get("labels", {}).get(shard_label)
    if o["kind"] == "ConfigMap" and shard and o.get("data", {}).get("TASKS"):
        tasks_of_shard[shard] = set(o["data"]["TASKS"].split(","))
for route in (o for o in objects if o["kind"] in port_name_of_route):
    name = f"{route['kind']} {route['metadata']['name']}"
    rules = route["spec"].get("rules", [])
    if len(rules) > 16:
        sys.exit(f"check-deploy: {directory}: {name}: {len(rules)} rules, more than 16")
    routed = {}
    for i, rule in enumerate(rules):
        matches = rule.get("matches", [])
        if len(matches) > 8:
            sys.exit(f"check-deploy: {directory}: {name} rule {i}: "
                     f"{len(matches)} matches, more than 8")
        backends = rule.get("backendRefs", [])
        shards = {shard_of_service.get(b["name"]) for b in backends}
        if len(shards) != 1 or None in shards:
            sys.exit(f"check-deploy: {directory}: {name} rule {i}: backends "
                     f"{backends} are not the Service of one shard")
        for b in backends:
            wanted = [p["port"] for p in services[b["name"]]["spec"]["ports"]
                      if p["name"] == port_name_of_route[route["kind"]]]
            if b.get("port") not in wanted:
                sys.exit(f"check-deploy: {directory}: {name} rule {i}: port {b.get('port')} "
                         f"of {b['name']} is not its {port_name_of_route[route['kind']]} port "
                         f"{wanted}")
        shard = shards.pop()
        for match in matches:
            for header in match.get("headers", []):
                if header.get("name") == "x-taskmoe-task":
                    routed.setdefault(shard, set()).add(header["value"])
    if routed != tasks_of_shard:
        sys.exit(f"check-deploy: {directory}: {name} routes {routed}, but the shards "
                 f"serve {tasks_of_shard}")
    kinds.append(f"({name} covers {sum(len(t) for t in routed.values())} tasks)")
print(f"check-deploy: {directory}: {len(objects)} objects ({', '.join(kinds)})")
EOF
done

# 2. YAML style and syntax.
yamllint --strict -c deploy/.yamllint deploy

# 3. Prometheus configuration (which loads the rules) and the rules on their own.
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/taskmoe-rules.yml

# 4. Dashboards parse, and use only metrics the server exports.
"$python" - docs/api.md deploy/prometheus/taskmoe-rules.yml deploy/grafana/*.json <<'EOF'
import json
import re
import sys

import yaml

api_md, rules_path, dashboards = sys.argv[1], sys.argv[2], sys.argv[3:]

# The metric names of docs/api.md's "## Metrics" table: first column, in backticks.
exported = {}
with open(api_md, encoding="utf-8") as f:
    section = re.search(r"^## Metrics\n(.*?)(?=^## )", f.read(), re.M | re.S)
if section is None:
    sys.exit(f"check-deploy: {api_md} has no '## Metrics' section")
for name, kind in re.findall(r"^\| `([a-z_:][a-z0-9_:]*)` \| ([a-z]+)", section.group(1), re.M):
    exported[name] = kind
if len(exported) < 10:
    sys.exit(f"check-deploy: found only {len(exported)} metrics in {api_md}'s table")
# The series a name stands for: a histogram's _bucket, _sum and _count.
series = set()
for name, kind in exported.items():
    series.add(name)
    if kind == "histogram":
        series.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
# Prometheus' own per-target series.
series.update({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

# Identifiers that name taskmoe or process metrics, and the `up` series, in a PromQL
# expression (label values in quotes are removed first).
metric_re = re.compile(r"\b(?:taskmoe|process)_[a-z0-9_]+\b|\bup\b")


def unknown_metrics(expr):
    return {m for m in metric_re.findall(re.sub(r'"[^"]*"', '""', expr)) if m not in series}


problems = []
with open(rules_path, encoding="utf-8") as f:
    rules = yaml.safe_load(f)
for group in rules["groups"]:
    for rule in group["rules"]:
        for m in sorted(unknown_metrics(rule["expr"])):
            problems.append(f"{rules_path}: {rule.get('alert', rule.get('record'))}: {m}")

for path in dashboards:
    with open(path, encoding="utf-8") as f:
        try:
            dashboard = json.load(f)
        except json.JSONDecodeError as e:
            sys.exit(f"check-deploy: {path} is not valid JSON: {e}")
    for key in ("title", "uid", "panels", "templating"):
        if key not in dashboard:
            problems.append(f"{path}: no '{key}'")
    variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    if "task" not in variables:
        problems.append(f"{path}: no 'task' template variable")
    exprs = 0

    def walk(node, where):
        global exprs
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("expr", "definition") and isinstance(v, str):
                    exprs += 1
                    for m in sorted(unknown_metrics(v)):
                        problems.append(f"{path}: {where}: {m}")
                else:
                    walk(v, node.get("title", where))
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    walk(dashboard, "dashboard")
    if exprs == 0:
        problems.append(f"{path}: no PromQL expressions")
    print(f"check-deploy: {path}: {len(dashboard.get('panels', []))} panels, {exprs} queries")

if problems:
    print("check-deploy: metrics that docs/api.md does not list as exported "
          "(or other problems):", file=sys.stderr)
    for p in problems:
        print(f"  {p}", file=sys.stderr)
    sys.exit(1)
print(f"check-deploy: rules and dashboards use only the {len(exported)} exported metrics")
EOF
echo "check-deploy: all deploy/ checks passed"
