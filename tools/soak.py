#!/usr/bin/python3
"""Soak test of taskmoe-server: a bounded run of mixed load with faults, watching for leaks.

Starts the Release server on the demo model's subnetworks (extracted into a temporary
repository unless --repository is given) and, for --duration, drives it with:
  - unary Translate requests over every task, closed loop (taskmoe-loadtest);
  - TranslateStream requests, closed loop;
  - beam-search requests of several texts;
  - requests whose deadline is shorter than their decode (DEADLINE_EXCEEDED expected);
  - every 30 s, a burst far over capacity (open loop; RESOURCE_EXHAUSTED expected);
  - every few seconds, a bad request (unknown task, invalid options; NOT_FOUND and
    INVALID_ARGUMENT expected) and a streaming client killed mid-stream (CANCELLED expected);
  - every 60 s, a reload of one task through the admin port.
Every --sample seconds it records the server's resident memory, threads, open files and
request counts by status code. After the run it checks that resident memory stayed flat
after warm-up (the mean of the last third of the run within --max_growth_mib of the mean of
the first third, and the level without load within it of the level after warm-up), that threads and file descriptors did not grow,
that no status code other than the expected ones occurred, and that the server still
answers and exits cleanly on SIGTERM. Prints a per-minute table; --json writes every sample.

Exit status: 0 when every check passes, 1 otherwise. Run through the `soak` build target
(cmake --build build/release --target soak) or directly:
  tools/soak.py --build_dir build/release --duration 600
"""

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

EXPECTED_CODES = {"OK", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "NOT_FOUND",
                  "INVALID_ARGUMENT", "CANCELLED"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build_dir", default=os.path.join(ROOT, "build", "release"))
    p.add_argument("--repository", default="",
                   help="model repository to serve (default: the demo model, extracted)")
    p.add_argument("--duration", type=float, default=600, help="seconds of load")
    p.add_argument("--warmup", type=float, default=240,
                   help="seconds after which resident memory must stay flat (the demo's 16 "
                        "tasks fill their workspaces and bounded primitive caches in ~4 min)")
    p.add_argument("--sample", type=float, default=5, help="seconds between samples")
    p.add_argument("--max_growth_mib", type=float, default=16,
                   help="largest allowed growth of resident memory after warm-up")
    p.add_argument("--threads", type=int, default=0, help="server --threads")
    p.add_argument("--burst_every", type=float, default=30, help="seconds between bursts (0: none)")
    p.add_argument("--reload_every", type=float, default=60,
                   help="seconds between reloads (0: none)")
    p.add_argument("--json", default="", help="write the samples and the verdict here")
    return p.parse_args()


def binary(build_dir, path):
    full = os.path.join(build_dir, path)
    if not os.access(full, os.X_OK):
        sys.exit(f"soak: {full} is missing; build Release first (tools/build.sh Release)")
    return full


def read_ports(path, server, deadline):
    while time.time() < deadline and server.poll() is None:
        if os.path.exists(path):
            ports = dict(line.split("=", 1) for line in open(path).read().split() if "=" in line)
            if "grpc_port" in ports and "metrics_port" in ports and "admin_port" in ports:
                return {k: int(v) for k, v in ports.items()}
        time.sleep(0.1)
    return None


def scrape(metrics_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        return r.read().decode()


def codes_from(exposition):
    """Sum of taskmoe_requests_total by status code."""
    codes = {}
    for m in re.finditer(r'^taskmoe_requests_total\{([^}]*)\} (\S+)$', exposition, re.M):
        code = re.search(r'code="([^"]*)"', m.group(1)).group(1)
        codes[code] = codes.get(code, 0) + float(m.group(2))
    return codes


def proc_sample(pid):
    status = open(f"/proc/{pid}/status").read()
    rss_kib = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_kib * 1024, threads, fds


def main():
    args = parse_args()
    server_bin = binary(args.build_dir, "server/taskmoe-server")
    client_bin = binary(args.build_dir, "server/taskmoe-client")
    loadtest_bin = binary(args.build_dir, "loadtest/taskmoe-loadtest")
    work = tempfile.mkdtemp(prefix="taskmoe-soak-")
    repository = args.repository
    if not repository:
        repository = os.path.join(work, "repository")
        subprocess.run([binary(args.build_dir, "tools/taskmoe-extract"),
                        f"--checkpoint={ROOT}/demo/taskmoe", f"--out={repository}"],
                       check=True, stdout=subprocess.DEVNULL)
    tasks = sorted(d for d in os.listdir(repository)
                   if os.path.exists(os.path.join(repository, d, "config.json")))

    port_file = os.path.join(work, "ports")
    server_log = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen(
        [server_bin, f"--model_repository={repository}", "--host=127.0.0.1", "--port=0",
         "--metrics_host=127.0.0.1", "--metrics_port=0", "--admin_host=127.0.0.1",
         "--admin_port=0", "--enable_admin", f"--port_file={port_file}", f"--threads={args.threads}",
         "--max_queue_sentences=64"],
        stdout=server_log, stderr=subprocess.STDOUT)
    children, burst_procs = [], []
    try:
        ports = read_ports(port_file, server, time.time() + 120)
        if ports is None:
            sys.exit(f"soak: the server did not start; log in {server_log.name}")
        target = f"127.0.0.1:{ports['grpc_port']}"
        admin = f"127.0.0.1:{ports['admin_port']}"
        # The port file comes when the server listens; load starts once every task is ready.
        deadline = time.time() + 300
        while subprocess.run([client_bin, f"--target={target}", "--health",
                              "taskmoe.v1.TranslationService"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL).returncode != 0:
            if time.time() > deadline or server.poll() is not None:
                sys.exit(f"soak: the server never became ready; log in {server_log.name}")
            time.sleep(0.2)
        print(f"soak: server pid {server.pid} on {target}, {len(tasks)} tasks, "
              f"{args.duration:.0f} s of load; logs in {work}", flush=True)

        def loadtest(name, extra, duration):
            log = open(os.path.join(work, f"loadtest-{name}.log"), "a")
            cmd = [loadtest_bin, f"--target={target}", f"--duration={duration:.0f}s",
                   "--warmup=0s", "--timeout=30s", f"--seed={random.randrange(1 << 30)}"] + extra
            return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

        steady = [
            ("unary", ["--concurrency=3", "--texts_per_request=2"]),
            ("stream", ["--api=stream", "--concurrency=2"]),
            ("beam", ["--concurrency=1", "--beam_size=4", "--texts_per_request=4"]),
            ("deadline", ["--concurrency=1", "--timeout=15ms", "--texts_per_request=4"]),
        ]
        children = [loadtest(name, extra, args.duration) for name, extra in steady]
        burst_procs = []

        samples = []
        start = time.time()
        next_sample = start
        next_burst = start + 20
        next_fault = start + 2
        next_reload = start + 45
        bursts = reloads = bad_requests = killed_streams = 0
        while time.time() - start < args.duration:
            now = time.time()
            if now >= next_sample:
                rss, threads, fds = proc_sample(server.pid)
                codes = codes_from(scrape(ports["metrics_port"]))
                samples.append({"t": round(now - start, 1), "rss_bytes": rss,
                                "threads": threads, "fds": fds, "codes": codes})
                next_sample += args.sample
            if args.burst_every > 0 and now >= next_burst:
                # 5 s at 400 requests/s of 8 texts: far over what 2 cores decode.
                burst_procs = [b for b in burst_procs if b.poll() is None]
                burst_procs.append(loadtest("burst", ["--loop=open", "--rate=400",
                                                      "--max_inflight=2000",
                                                      "--texts_per_request=8"], 5))
                bursts += 1
                next_burst += args.burst_every
            if now >= next_fault:
                bad = random.choice([["--task=xx-yy", "Hello"],
                                     [f"--task={random.choice(tasks)}", "--beam_size=99",
                                      "Hello"]])
                subprocess.run([client_bin, f"--target={target}"] + bad,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                bad_requests += 1
                streamer = subprocess.Popen(
                    [client_bin, f"--target={target}", f"--task={random.choice(tasks)}",
                     "--stream", "--max_output_tokens=200",
                     "A long sentence to translate, so that the stream is cut in the middle."],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(random.uniform(0.02, 0.2))
                streamer.kill()
                streamer.wait()
                killed_streams += 1
                next_fault += 3
            if args.reload_every > 0 and now >= next_reload:
                subprocess.run([client_bin, f"--target={admin}",
                                f"--reload={random.choice(tasks)}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
                reloads += 1
                next_reload += args.reload_every
            time.sleep(0.05)

        for c in children + burst_procs:
            c.wait(timeout=120)
        # Longer than the server's --malloc_trim_interval_ms (5 s), so the level is settled.
        time.sleep(8)
        rss, threads, fds = proc_sample(server.pid)
        exposition = scrape(ports["metrics_port"])
        codes = codes_from(exposition)
        samples.append({"t": round(time.time() - start, 1), "rss_bytes": rss,
                        "threads": threads, "fds": fds, "codes": codes})
        unexpected_series = [line for line in exposition.splitlines()
                             if line.startswith("taskmoe_requests_total{") and
                             re.search(r'code="([^"]*)"', line).group(1) not in EXPECTED_CODES]
        # Still serving after all that.
        alive = subprocess.run([client_bin, f"--target={target}", f"--task={tasks[0]}",
                                "Hello world."], capture_output=True, text=True)
    finally:
        for c in children + burst_procs:
            if c.poll() is None:
                c.kill()
        server.send_signal(signal.SIGTERM)
        try:
            exit_code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            exit_code = -1

    # Verdict. Bursts make resident memory swing, so "flat" compares averages: the mean of the
    # last third of the loaded run against the mean of its first third after warm-up, and the
    # level once the load is gone against the level at the end of warm-up.
    loaded = [s for s in samples[:-1] if s["t"] >= args.warmup] or samples[-1:]
    third = max(1, len(loaded) // 3)
    first_mean = sum(s["rss_bytes"] for s in loaded[:third]) / third
    last_mean = sum(s["rss_bytes"] for s in loaded[-third:]) / third
    envelope_growth_mib = (last_mean - first_mean) / 2**20
    base = loaded[0]
    settled_growth_mib = (samples[-1]["rss_bytes"] - base["rss_bytes"]) / 2**20
    final_codes = samples[-1]["codes"]
    unexpected = {c: n for c, n in final_codes.items() if c not in EXPECTED_CODES}
    total = sum(final_codes.values())
    checks = {
        f"resident memory: mean of the first third after warm-up {first_mean / 2**20:.0f} MiB,"
        f" of the last third {last_mean / 2**20:.0f} MiB ({envelope_growth_mib:+.1f}), limit"
        f" {args.max_growth_mib} MiB": envelope_growth_mib <= args.max_growth_mib,
        f"resident memory without load {samples[-1]['rss_bytes'] / 2**20:.0f} MiB, at the end of"
        f" warm-up {base['rss_bytes'] / 2**20:.0f} MiB ({settled_growth_mib:+.1f})":
            settled_growth_mib <= args.max_growth_mib,
        f"threads {base['threads']} -> {samples[-1]['threads']}":
            samples[-1]["threads"] <= base["threads"] + 4,
        f"open files {base['fds']} -> {samples[-1]['fds']}": samples[-1]["fds"] <= base["fds"] + 8,
        f"no unexpected status code ({unexpected or 'none'})": not unexpected,
        "every expected fault was seen": all(final_codes.get(c, 0) > 0 for c in
                                             ("OK", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED",
                                              "NOT_FOUND", "INVALID_ARGUMENT", "CANCELLED")),
        "served a request after the load": alive.returncode == 0,
        f"exit code {exit_code} on SIGTERM": exit_code == 0,
    }

    print("\n| minute | RSS MiB | threads | open files | requests/s | OK | DEADLINE_EXCEEDED |"
          " RESOURCE_EXHAUSTED | CANCELLED | other errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    previous = {"t": 0, "codes": {}}
    by_minute = {}
    for s in samples:
        by_minute[int(s["t"] // 60)] = s
    for minute, s in sorted(by_minute.items()):
        delta = {c: n - previous["codes"].get(c, 0) for c, n in s["codes"].items()}
        seconds = max(s["t"] - previous["t"], 1e-9)
        other = sum(n for c, n in delta.items()
                    if c not in ("OK", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "CANCELLED"))
        print(f"| {minute + 1} | {s['rss_bytes'] / 2**20:.1f} | {s['threads']} | {s['fds']} | "
              f"{sum(delta.values()) / seconds:.1f} | {delta.get('OK', 0):.0f} | "
              f"{delta.get('DEADLINE_EXCEEDED', 0):.0f} | {delta.get('RESOURCE_EXHAUSTED', 0):.0f}"
              f" | {delta.get('CANCELLED', 0):.0f} | {other:.0f} |")
        previous = s
    print(f"\n{total:.0f} requests: " + ", ".join(f"{c} {n:.0f}" for c, n in
                                                 sorted(final_codes.items())))
    print(f"{bursts} bursts, {bad_requests} bad requests, {killed_streams} streams killed, "
          f"{reloads} reloads")
    for line in unexpected_series:
        print("unexpected: " + line)
    for text, ok in checks.items():
        print(("PASS " if ok else "FAIL ") + text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"samples": samples, "checks": checks, "bursts": bursts,
                       "reloads": reloads, "bad_requests": bad_requests,
                       "killed_streams": killed_streams}, f, indent=1)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
