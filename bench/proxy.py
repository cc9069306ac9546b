#!/usr/bin/env python3
"""Drives bench/proxy.sh: starts a CA, a control plane, a backend app and two
sidecars (frontend → reviews of examples/shop) on loopback, then measures the
direct path and the path through both sidecars with real load generators.

Each round measures direct and via-sidecars back to back (alternating which goes
first), so the figures compared were taken under the same machine load; the
report gives medians over rounds."""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

RATE = 1000  # requests per second for the fixed-rate phase
HEY_WORKERS = 10
WRK_CONNECTIONS = 32
HOST = "reviews.shop:8080"
PATH = "/reviews"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mesh:
    def __init__(self, palisade, workdir):
        self.palisade = palisade
        self.dir = workdir
        self.procs = []

    def run(self, *args):
        return subprocess.run([self.palisade, *args], check=True, capture_output=True, text=True).stdout

    def start(self, *args, wait_for="listening on"):
        log = open(os.path.join(self.dir, f"proc{len(self.procs)}.log"), "w")
        proc = subprocess.Popen(
            [self.palisade, *args], stdout=subprocess.PIPE, stderr=log, text=True,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        self.procs.append(proc)
        deadline = time.time() + 30
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise SystemExit(f"`palisade {' '.join(args[:2])}` exited; see {log.name}")
            if wait_for in line:
                return proc, line
        raise SystemExit(f"`palisade {' '.join(args[:2])}` did not start within 30 s")

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_ready(admin_port):
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the sidecar with admin port {admin_port} did not become ready")


def build_mesh(palisade, workdir):
    mesh = Mesh(palisade, workdir)
    ca_dir = os.path.join(workdir, "ca")
    mesh.run("ca", "init", "--trust-domain", "shop.example", "--dir", ca_dir)
    _, line = mesh.start("ca", "serve", "--dir", ca_dir, "--listen", "127.0.0.1:0")
    ca_addr = line.split("listening on")[1].strip()
    bundle = os.path.join(workdir, "shop")
    shutil.copytree(os.path.join(os.path.dirname(__file__), "..", "examples", "shop"), bundle)
    ports = {name: free_port() for name in
             ["app", "front_in", "front_out", "front_admin", "rev_in", "rev_out", "rev_admin", "cp", "cp_admin"]}
    services = open(os.path.join(bundle, "services.yaml")).read()
    services = services.replace("127.0.0.1:15003", f"127.0.0.1:{ports['rev_in']}")
    services = services.replace("127.0.0.1:15001", f"127.0.0.1:{ports['front_in']}")
    open(os.path.join(bundle, "services.yaml"), "w").write(services)

    def token(spiffe_id):
        return mesh.run("ca", "token", "create", "--spiffe-id", spiffe_id, "--dir", ca_dir).strip()

    trust = os.path.join(ca_dir, "bundle.pem")
    mesh.start("control-plane", "serve", "--bundle", bundle, "--listen", f"127.0.0.1:{ports['cp']}",
               "--admin", f"127.0.0.1:{ports['cp_admin']}", "--ca", ca_addr, "--trust-bundle", trust,
               "--join-token", token("spiffe://shop.example/ns/palisade-system/sa/palisade-control-plane"))
    mesh.start("demo", "app", "--name", "reviews", "--listen", f"127.0.0.1:{ports['app']}")
    sidecars = {}
    for name, ns, prefix in [("frontend", "web", "front"), ("reviews", "reviews", "rev")]:
        proc, _ = mesh.start(
            "proxy", "run", "--id", f"spiffe://shop.example/ns/{ns}/sa/{name}",
            "--join-token", token(f"spiffe://shop.example/ns/{ns}/sa/{name}"),
            "--trust-bundle", trust, "--ca", ca_addr, "--control-plane", f"127.0.0.1:{ports['cp']}",
            "--inbound", f"127.0.0.1:{ports[prefix + '_in']}", "--outbound", f"127.0.0.1:{ports[prefix + '_out']}",
            "--admin", f"127.0.0.1:{ports[prefix + '_admin']}", "--app", f"127.0.0.1:{ports['app']}",
            wait_for="admin listening on")
        sidecars[name] = proc
        wait_ready(ports[prefix + "_admin"])
    return mesh, ports, sidecars


def hey(url, duration, proxy=None):
    args = ["hey", "-z", f"{duration}s", "-c", str(HEY_WORKERS), "-q", str(RATE // HEY_WORKERS)]
    if proxy:
        args += ["-x", proxy]
    out = subprocess.run(args + [url], check=True, capture_output=True, text=True).stdout
    pct = {int(p): float(s) * 1000 for p, s in re.findall(r"(\d+)%+ in ([\d.]+) secs", out)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", out))
    errors = sum(int(n) for c, n in codes.items() if c != "200")
    errors += len(re.findall(r"^\s+\[\d+\]\s+Get", out, re.M))
    return {"p50": pct.get(50), "p99": pct.get(99), "rps": rps, "non200": errors}


def hey_sequential(url, proxy=None, n=3000):
    """One connection, one request at a time: latency without queueing."""
    args = ["hey", "-n", str(n), "-c", "1"] + (["-x", proxy] if proxy else [])
    out = subprocess.run(args + [url], check=True, capture_output=True, text=True).stdout
    pct = {int(p): float(s) * 1000 for p, s in re.findall(r"(\d+)%+ in ([\d.]+) secs", out)}
    return {"p50": pct.get(50), "p99": pct.get(99)}


def wrk(url, duration, host=None):
    args = ["wrk", "-t2", f"-c{WRK_CONNECTIONS}", f"-d{duration}s", "--latency"]
    if host:
        args += ["-H", f"Host: {host}"]
    out = subprocess.run(args + [url], check=True, capture_output=True, text=True).stdout

    def ms(value, unit):
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    pct = {int(p): ms(v, u) for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)", out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"p50": pct.get(50), "p99": pct.get(99), "rps": rps, "non200": int(non2xx.group(1)) if non2xx else 0}


def proc_stats(pid):
    with open(f"/proc/{pid}/status") as f:
        status = f.read()
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024
    peak = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
    anon = int(re.search(r"RssAnon:\s+(\d+) kB", status).group(1)) / 1024
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, peak, cpu, anon


def measure(name, run, sidecars, duration):
    before = {n: proc_stats(p.pid) for n, p in sidecars.items()}
    started = time.time()
    result = run()
    elapsed = time.time() - started
    for n, p in sidecars.items():
        rss, peak, cpu, anon = proc_stats(p.pid)
        result[f"{n}_anon_mb"] = anon
        result[f"{n}_cpu_pct"] = 100 * (cpu - before[n][2]) / elapsed
        result[f"{n}_rss_mb"] = rss
        result[f"{n}_peak_rss_mb"] = peak
    return result


def profile(out_dir, sidecars, via_url, seconds=8):
    """One wrk run per sidecar with `perf record` attached to it."""
    os.makedirs(out_dir, exist_ok=True)
    for name, proc in sidecars.items():
        data = os.path.join(out_dir, f"perf-{name}.data")
        perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-o", data, "-p", str(proc.pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        wrk(via_url, seconds, host=HOST)
        perf.send_signal(signal.SIGINT)
        perf.wait()
        print(f"profile of the {name} sidecar: perf report -i {data} --no-children --sort sym", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--palisade", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--perf", metavar="DIR",
                        help="after the rounds, record `perf record -g` of each sidecar under wrk into DIR")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="palisade-bench-")
    mesh, ports, sidecars = build_mesh(os.path.abspath(args.palisade), workdir)
    direct_url = f"http://127.0.0.1:{ports['app']}{PATH}"
    via_proxy = f"http://127.0.0.1:{ports['front_out']}"
    via_url = f"{via_proxy}{PATH}"
    try:
        # Warm-up: pools, caches, the first decision of each kind.
        wrk(direct_url, 2)
        wrk(via_url, 2, host=HOST)
        sequential = {
            "direct": hey_sequential(direct_url),
            "via": hey_sequential(f"http://{HOST}{PATH}", proxy=via_proxy),
        }
        rounds = []
        for i in range(args.rounds):
            pair = {}
            order = ["direct", "via"] if i % 2 == 0 else ["via", "direct"]
            for kind in order:
                if kind == "direct":
                    pair["rate_direct"] = measure("direct", lambda: hey(direct_url, args.duration), sidecars, args.duration)
                    pair["max_direct"] = measure("direct", lambda: wrk(direct_url, args.duration), sidecars, args.duration)
                else:
                    pair["rate_via"] = measure("via", lambda: hey(f"http://{HOST}{PATH}", args.duration, proxy=via_proxy), sidecars, args.duration)
                    pair["max_via"] = measure("via", lambda: wrk(via_url, args.duration, host=HOST), sidecars, args.duration)
            rounds.append(pair)
            print(f"round {i + 1}/{args.rounds}: "
                  f"p50 +{pair['rate_via']['p50'] - pair['rate_direct']['p50']:.3f} ms, "
                  f"p99 +{pair['rate_via']['p99'] - pair['rate_direct']['p99']:.3f} ms at {RATE} rps; "
                  f"max {pair['max_via']['rps']:.0f} vs {pair['max_direct']['rps']:.0f} rps", file=sys.stderr)
        if args.perf:
            profile(args.perf, sidecars, via_url)
    finally:
        mesh.stop()

    def med(key, field):
        return statistics.median(r[key][field] for r in rounds)

    added_p50 = statistics.median(r["rate_via"]["p50"] - r["rate_direct"]["p50"] for r in rounds)
    added_p99 = statistics.median(r["rate_via"]["p99"] - r["rate_direct"]["p99"] for r in rounds)
    ratio = statistics.median(r["max_via"]["rps"] / r["max_direct"]["rps"] for r in rounds)
    errors = sum(r[k]["non200"] for r in rounds for k in r)
    print(f"\nPalisade proxy benchmark: {args.rounds} rounds of {args.duration}s, medians; "
          f"frontend sidecar → reviews sidecar → app, examples/shop policies")
    print(f"{'':28}{'direct':>12}{'via 2 sidecars':>16}{'added / ratio':>16}")
    print(f"{'p50 @ 1,000 rps (ms)':28}{med('rate_direct', 'p50'):>12.3f}{med('rate_via', 'p50'):>16.3f}{added_p50:>+16.3f}")
    print(f"{'p99 @ 1,000 rps (ms)':28}{med('rate_direct', 'p99'):>12.3f}{med('rate_via', 'p99'):>16.3f}{added_p99:>+16.3f}")
    print(f"{'p50 one at a time (ms)':28}{sequential['direct']['p50']:>12.3f}{sequential['via']['p50']:>16.3f}"
          f"{sequential['via']['p50'] - sequential['direct']['p50']:>+16.3f}")
    print(f"{'max throughput (rps)':28}{med('max_direct', 'rps'):>12.0f}{med('max_via', 'rps'):>16.0f}{ratio:>16.2f}")
    print(f"{'p50 @ max (ms)':28}{med('max_direct', 'p50'):>12.3f}{med('max_via', 'p50'):>16.3f}")
    for name in sidecars:
        print(f"{name + ' sidecar':28}"
              f"RSS {med('max_via', name + '_rss_mb'):.1f} MB (peak {max(r['max_via'][name + '_peak_rss_mb'] for r in rounds):.1f}; "
              f"private {med('max_via', name + '_anon_mb'):.1f} MB, the rest mapped binary), "
              f"CPU {med('rate_via', name + '_cpu_pct'):.0f}% of a core at 1,000 rps, "
              f"{med('max_via', name + '_cpu_pct'):.0f}% at max")
    print(f"non-200 responses in all runs: {errors}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": rounds, "sequential": sequential, "added_p50_ms": added_p50, "added_p99_ms": added_p99,
                       "throughput_ratio": ratio}, f, indent=2)
    shutil.rmtree(workdir, ignore_errors=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
