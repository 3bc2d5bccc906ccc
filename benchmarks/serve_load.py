"""Load test of `llmcxr serve`'s REST API on loopback: N concurrent clients for a fixed time.

Starts `llmcxr serve --no-ui` on 127.0.0.1 (a free port) with a trained model folder, then runs
``--clients`` threads for ``--seconds``; each loops over /v1/report (PNG upload), /v1/image (JSON ->
PNG) and /v1/answer (upload + question) in turn, starting at a different endpoint per client, with a
new seed per request. Clients stop sending at the deadline and wait for their last reply. Records
requests, errors (any non-200 or transport error; the target is 0), throughput, and latency
percentiles per endpoint. Inputs are the server's own example CXRs (the synthetic renderer).

    nice -n 10 python benchmarks/serve_load.py        # the shipped checkpoints/llmcxr-tiny
        # writes benchmarks/results/serve_load.json
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from llmcxr import atomic
from llmcxr.serve.examples import QUESTIONS, render_examples

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "serve_load.json"
ENDPOINTS = ("report", "image", "answer")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, port: int, threads: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-c", "from llmcxr.cli import main; main()", "serve", "--model", str(model)]
    command += ["--port", str(port), "--threads", str(threads), "--no-ui"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


def wait_healthy(base: str, server: subprocess.Popen, log: Path, limit_s: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server exited with code {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            reply = httpx.get(f"{base}/v1/health", timeout=2)
            if reply.status_code == 200:
                return reply.json()
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    sys.exit(f"the server was not healthy within {limit_s:g} s")


class Client(threading.Thread):
    """One client: requests in turn until the deadline; records (endpoint, latency s, model s, error or None)."""

    def __init__(self, index: int, base: str, deadline: float, inputs: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.index, self.base, self.deadline, self.inputs = index, base, deadline, inputs
        self.records: list[tuple[str, float, float, str | None]] = []

    def request(self, http: httpx.Client, endpoint: str, k: int) -> httpx.Response:
        seed = str(self.index * 100_000 + k)
        images, reports = self.inputs["images"], self.inputs["reports"]
        name, data = images[k % len(images)]
        if endpoint == "report":
            return http.post("/v1/report", files={"image": (name, data)}, data={"seed": seed})
        if endpoint == "answer":
            question = QUESTIONS[k % len(QUESTIONS)]
            return http.post(
                "/v1/answer", files={"image": (name, data)}, data={"question": question, "seed": seed}
            )
        return http.post("/v1/image", json={"report": reports[k % len(reports)], "seed": int(seed)})

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=300) as http:
            k = 0
            while time.monotonic() < self.deadline:
                endpoint = ENDPOINTS[(self.index + k) % len(ENDPOINTS)]
                start, compute = time.perf_counter(), 0.0
                try:
                    reply = self.request(http, endpoint, k)
                    error = None if reply.status_code == 200 else f"{reply.status_code}: {reply.text[:200]}"
                    if error is None:
                        compute = float(
                            reply.headers["x-compute-seconds"]
                            if endpoint == "image"
                            else reply.json()["compute_s"]
                        )
                except httpx.HTTPError as err:
                    error = f"{type(err).__name__}: {err}"
                self.records.append((endpoint, time.perf_counter() - start, compute, error))
                k += 1


def latency_summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    values = np.asarray(latencies)
    return {
        "p50_s": round(float(np.percentile(values, 50)), 3),
        "p90_s": round(float(np.percentile(values, 90)), 3),
        "p99_s": round(float(np.percentile(values, 99)), 3),
        "max_s": round(float(values.max()), 3),
        "mean_s": round(float(values.mean()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "checkpoints" / "llmcxr-tiny",
        help="trained model folder (with vq/); default: the shipped tiny model",
    )
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="llmcxr-load-"))
    examples = render_examples(scratch / "examples")
    inputs = {
        "images": [(e.image.name, e.image.read_bytes()) for e in examples],
        "reports": [e.report for e in examples],
    }
    port, log = free_port(), scratch / "server.log"
    base = f"http://127.0.0.1:{port}"
    load_before = os.getloadavg()
    server = start_server(args.model, port, args.threads, log)
    try:
        health = wait_healthy(base, server, log)
        print(f"server up on {base}: {health}", flush=True)
        start = time.monotonic()
        clients = [Client(i, base, start + args.seconds, inputs) for i in range(args.clients)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        elapsed = time.monotonic() - start
        health_after = httpx.get(f"{base}/v1/health", timeout=10).json()
    finally:
        server.terminate()
        server.wait(30)

    records = [r for client in clients for r in client.records]
    by_endpoint: dict[str, list[float]] = defaultdict(list)
    errors = [(endpoint, error) for endpoint, _, _, error in records if error]
    compute: dict[str, list[float]] = defaultdict(list)
    for endpoint, latency, model_s, error in records:
        if not error:
            by_endpoint[endpoint].append(latency)
            compute[endpoint].append(model_s)
    result = {
        "command": f"nice -n 10 python benchmarks/serve_load.py --model {args.model} --clients {args.clients} "
        f"--seconds {args.seconds:g} --threads {args.threads}",
        "server": f"llmcxr serve --no-ui on 127.0.0.1, one model worker, torch threads {args.threads}",
        "model": {
            "folder": str(args.model),
            **{k: health[k] for k in ("model", "device", "dtype", "image_size")},
        },
        "clients": args.clients,
        "seconds": args.seconds,
        "wall_s": round(elapsed, 1),
        "requests": len(records),
        "errors": len(errors),
        "error_examples": [f"{endpoint}: {error}" for endpoint, error in errors[:5]],
        "throughput_rps": round(len(records) / elapsed, 2),
        "latency": latency_summary([latency for _, latency, _, error in records if not error]),
        "latency_note": "client-side, queue wait included: one worker serves requests in turn",
        "endpoints": {
            endpoint: {
                "requests": sum(1 for r in records if r[0] == endpoint),
                **latency_summary(by_endpoint[endpoint]),
                "model_mean_s": round(float(np.mean(compute[endpoint])), 3) if compute[endpoint] else None,
            }
            for endpoint in ENDPOINTS
        },
        "queue_depth_after": health_after["queue_depth"],
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "note": "client threads and the server share this machine (loopback); other jobs may run too",
        },
    }
    atomic.write_json(args.out, result)
    print(
        f"{len(records)} requests, {len(errors)} errors, {result['throughput_rps']} req/s, "
        f"latency {result['latency']}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
