#!/usr/bin/env python3
"""Hot-swap figures for Wharf with 20 apps (run through benches/hot-swap.sh).

1. Start-up: process start to serving all 20 apps, with the compiled-module cache
   cold (STATEDIR/compiled removed) and warm, alternated for ROUNDS rounds.
2. Reconfiguration: time from sending `PUT /config` (the whole 20-app tree, one
   setting changed, every app unchanged and warm) to the acknowledgement, measured on
   the control socket by this client; and the same for a change that rebuilds one app.
3. Latency under a swap storm: wrk (-t2 -c64 --latency) against app0 for SECONDS,
   steady, then while a second thread restarts app0 and reconfigures (routes added
   and removed, another app changed), pausing PAUSE_MS (default 10) between two
   operations; p99 of each, alternated.

usage: hot_swap.py WHARF_BIN HELLO_WASM WORK_DIR [ROUNDS] [SECONDS] [PAUSE_MS]
"""

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

APPS = 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leb128(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def distinct_module(hello, index):
    """hello.wasm plus a custom section naming it: same code, different bytes (hash)."""
    name = b"wharf-bench"
    payload = leb128(len(name)) + name + f"app{index}".encode()
    return hello + b"\x00" + leb128(len(payload)) + payload


def control(sock_path, method, path, body=None):
    """One request on the control socket; returns (status, body, seconds to the answer)."""
    data = b"" if body is None else json.dumps(body).encode()
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode() + data
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock_path)
        start = time.perf_counter()
        s.sendall(request)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        elapsed = time.perf_counter() - start
    reply = b"".join(chunks)
    status = int(reply.split(b" ", 2)[1]) if reply else 0
    return status, reply.split(b"\r\n\r\n", 1)[-1], elapsed


class Wharf:
    def __init__(self, binary, work, config_path):
        self.binary, self.work, self.config_path = binary, work, config_path
        self.state = os.path.join(work, "state")
        self.sock = os.path.join(work, "control.sock")
        self.proc = None

    def start(self):
        """Starts the server; returns seconds until it serves (its control socket opens
        only once the config is applied and every app started)."""
        start = time.perf_counter()
        log = open(os.path.join(self.work, "wharf.log"), "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--statedir", self.state, "--control", f"unix:{self.sock}",
             "--config", self.config_path],
            stdout=log, stderr=log)
        while True:
            try:
                if control(self.sock, "GET", "/status")[0] == 200:
                    return time.perf_counter() - start
            except OSError:
                pass
            if self.proc.poll() is not None:
                sys.exit(f"wharf exited; see {self.work}/wharf.log")
            time.sleep(0.002)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        if os.path.exists(self.sock):
            os.remove(self.sock)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def wrk_p99(url, seconds):
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    match = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    value = float(match.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[match.group(2)]
    return value, float(rps.group(1)), errors.group(0) if errors else None


def main():
    binary, hello_path, work = sys.argv[1:4]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    seconds = int(sys.argv[5]) if len(sys.argv) > 5 else 10
    # Between two storm operations: 10 ms makes about 100 restarts and changes a second.
    pause = float(sys.argv[6]) / 1e3 if len(sys.argv) > 6 else 0.01
    hello = open(hello_path, "rb").read()
    modules = os.path.join(work, "modules")
    os.makedirs(modules, exist_ok=True)
    apps = {}
    for i in range(APPS):
        path = os.path.join(modules, f"app{i}.wasm")
        with open(path, "wb") as f:
            f.write(distinct_module(hello, i))
        apps[f"app{i}"] = {
            "type": "wasm", "module": path, "request_handler": "luw_request_handler",
            "malloc_handler": "luw_malloc_handler", "free_handler": "luw_free_handler",
            "processes": os.cpu_count()}
    direct, routed = free_port(), free_port()
    tree = {
        "listeners": {f"127.0.0.1:{direct}": {"pass": "applications/app0"},
                      f"127.0.0.1:{routed}": {"pass": "routes"}},
        "routes": [{"match": {"uri": f"/app{i}"}, "action": {"pass": f"applications/app{i}"}}
                   for i in range(APPS)],
        "applications": apps,
        "settings": {"http": {"idle_timeout": 180}},
    }
    config_path = os.path.join(work, "config.json")
    with open(config_path, "w") as f:
        json.dump(tree, f)

    # 1. Start-up, cold against warm cache.
    server = Wharf(binary, work, config_path)
    cold, warm = [], []
    for _ in range(rounds):
        shutil.rmtree(os.path.join(server.state, "compiled"), ignore_errors=True)
        cold.append(server.start())
        server.stop()
        warm.append(server.start())
        server.stop()
        print(f"start to serving {APPS} apps: cold cache {cold[-1] * 1e3:.0f} ms, "
              f"warm cache {warm[-1] * 1e3:.0f} ms")
    c, w = statistics.median(cold), statistics.median(warm)
    print(f"median: cold {c * 1e3:.0f} ms, warm {w * 1e3:.0f} ms, cold/warm {c / w:.1f}x")

    # 2. PUT to acknowledgement.
    server.start()
    samples = []
    for n in range(50):
        tree["settings"]["http"]["idle_timeout"] = 180 + n % 2
        status, body, elapsed = control(server.sock, "PUT", "/config", tree)
        assert status == 200, body
        samples.append(elapsed)
    print(f"PUT /config, {APPS} warm apps, 50 changes: median {statistics.median(samples) * 1e3:.2f} ms, "
          f"p90 {percentile(samples, 90) * 1e3:.2f} ms, max {max(samples) * 1e3:.2f} ms")
    one = []
    for n in range(20):
        status, body, elapsed = control(
            server.sock, "PUT", "/config/applications/app19/environment", {"N": str(n)})
        assert status == 200, body
        one.append(elapsed)
    print(f"PUT changing one app (its instances started afresh), 20 changes: median "
          f"{statistics.median(one) * 1e3:.2f} ms, max {max(one) * 1e3:.2f} ms")

    # 3. p99 under a swap storm.
    stop = threading.Event()
    done = {"ops": 0, "failed": 0}

    def storm():
        n = 0
        while not stop.is_set():
            ops = [
                ("GET", "/control/applications/app0/restart", None),
                ("PUT", "/config/applications/app1/environment", {"N": str(n)}),
                ("POST", "/config/routes", {"match": {"uri": "/extra"}, "action": {"return": 204}}),
                ("DELETE", f"/config/routes/{APPS}", None),
            ]
            method, path, body = ops[n % len(ops)]
            status, reply, _ = control(server.sock, method, path, body)
            done["ops"] += 1
            done["failed"] += status != 200
            if status != 200:
                print(f"{method} {path}: {status} {reply[:300]!r}", file=sys.stderr)
            n += 1
            time.sleep(pause)

    url = f"http://127.0.0.1:{direct}/"
    steady, stormy = [], []
    for _ in range(rounds):
        p99, rps, errors = wrk_p99(url, seconds)
        steady.append(p99)
        print(f"steady: p99 {p99:.2f} ms at {rps:.0f} req/s{'; ' + errors if errors else ''}")
        stop.clear()
        before = done["ops"]
        thread = threading.Thread(target=storm)
        thread.start()
        p99, rps, errors = wrk_p99(url, seconds)
        stop.set()
        thread.join()
        stormy.append(p99)
        print(f"storm: p99 {p99:.2f} ms at {rps:.0f} req/s with {done['ops'] - before} swaps "
              f"and changes{'; ' + errors if errors else ''}")
    s, t = statistics.median(steady), statistics.median(stormy)
    print(f"median p99: steady {s:.2f} ms, storm {t:.2f} ms, storm/steady {t / s:.2f}; "
          f"control operations failed: {done['failed']}")
    server.stop()


if __name__ == "__main__":
    main()
