"""`deploykit serve` under load, beside the same artifact's offline figures, in one run on one machine.

    pip install -e ".[bench]"      # aiohttp: readiness and /metrics polls, and the --client aiohttp load
    DEPLOYKIT_DATA_DIR=../shared/data python bench/serve_load.py [runs/sst2-minilm/quantize] [--requests 1000]

1. Offline: the artifact loaded in this process with `deploykit.predictor.load` (tokenization included, as
   the server does it): batch-1 p50 latency and batch-32 throughput on sst2/test.tsv sentences.
2. Online: `deploykit serve` started as a subprocess on a free 127.0.0.1 port, driven at each concurrency
   by exactly that many requests in flight over as many keep-alive connections, each request one sentence on
   POST /predict; latency is measured at the client, from send to parsed reply. `--client raw` (the default)
   is a minimal HTTP/1.1 client on asyncio streams (pre-encoded requests, replies read by Content-Length,
   every reply's JSON parsed and checked), as load generators such as wrk are: on the server's own 2 cores
   every CPU-millisecond the client spends is taken from the server. `--client aiohttp` drives it with an
   aiohttp ClientSession instead (0.2-0.3 ms of client CPU a request here; httpx spent 1.5-2 ms).
3. The offline figures again, once the server has stopped (this box's speed drifts; both are printed,
   their mean is what the targets compare against).

Targets (issue 20): no errors and no dropped requests at any concurrency; at concurrency 1, p50 within
1 ms of the offline batch-1 p50; at concurrency 32, throughput >= 70% of the offline batch-32 throughput.
The client runs on the same cores as the server: at high concurrency it takes CPU the server would use.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

try:
    import aiohttp
except ImportError:
    raise SystemExit('bench/serve_load.py needs aiohttp: pip install -e ".[bench]"') from None

FLAGS = ("avx2", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def read_texts(data_dir: Path) -> list[str]:
    path = data_dir / "sst2" / "test.tsv"
    if not path.is_file():
        raise SystemExit(f"{path}: not found; set DEPLOYKIT_DATA_DIR to the folder holding sst2/")
    with path.open(encoding="utf-8", newline="") as fh:
        return [row["sentence"] for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def offline(folder: Path, texts: list[str], threads: int | None, calls: int) -> dict[str, float]:
    """Batch-1 p50 (ms) over `calls` single sentences and batch-32 throughput (sentences/s), in this process."""
    from deploykit.predictor import load

    predictor = load(folder, threads=threads)
    for text in texts[:20]:
        predictor.logits([text])  # warm-up
    times, cpu = [], cpu_seconds()
    for i in range(calls):
        start = time.perf_counter()
        predictor.logits([texts[i % len(texts)]], batch_size=1)
        times.append(time.perf_counter() - start)
    cpu1 = (cpu_seconds() - cpu) / calls
    batches = [texts[i:i + 32] for i in range(0, len(texts) - 31, 32)]
    predictor.logits(batches[0], batch_size=32)
    start, rows, cpu = time.perf_counter(), 0, cpu_seconds()
    while time.perf_counter() - start < 5 or rows < 32 * len(batches):
        batch = batches[(rows // 32) % len(batches)]
        predictor.logits(batch, batch_size=32)
        rows += len(batch)
    return {"p50_ms": statistics.median(times) * 1000, "throughput": rows / (time.perf_counter() - start),
            "cpu1_ms": cpu1 * 1000, "cpu32_ms": (cpu_seconds() - cpu) * 1000 / rows,
            "runtime": predictor.runtime, "batch_invariant": predictor.batch_invariant}


def cpu_seconds() -> float:
    """CPU time of this process, every thread (ONNX Runtime's own included)."""
    return sum(os.times()[:2])


def start_server(folder: Path, args) -> tuple[subprocess.Popen, str, list[str]]:
    argv = [sys.executable, "-m", "deploykit.cli", "serve", str(folder), "--port", "0",
            "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    threads = args.server_threads or args.threads
    if threads:
        argv += ["--threads", str(threads)]
    if args.server_workers:
        argv += ["--workers", str(args.server_workers)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    for line in proc.stderr:
        lines.append(line)
        found = re.search(r"http://[\d.]+:\d+", line)
        if found:
            threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
            return proc, found.group(0), lines
    proc.wait()
    raise SystemExit(f"deploykit serve did not start:\n{''.join(lines)}")


def stop_server(proc: subprocess.Popen) -> int | None:
    """SIGTERM, then SIGKILL past 60 s: the server never outlives this script, however it ends."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
    except BaseException:  # Ctrl-C while waiting
        proc.kill()
        raise


async def wait_ready(url: str, timeout: float = 120) -> None:
    async with aiohttp.ClientSession() as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                async with client.get(f"{url}/v2/health/ready") as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"{url} was not ready within {timeout:.0f} s")


async def drive(url: str, texts: list[str], concurrency: int, requests: int, pid: int,
                client_kind: str = "raw") -> dict[str, float]:
    """`requests` POST /predict of one sentence each, `concurrency` in flight; client-side latencies."""
    latencies: list[float] = []
    errors = dropped = 0
    gate = asyncio.Semaphore(concurrency)
    server = psutil.Process(pid)
    peak = {"rss": server.memory_info().rss}
    bodies = [json.dumps({"texts": [text]}).encode() for text in texts]
    headers = {"Content-Type": "application/json"}

    async def sample_rss() -> None:
        while True:
            peak["rss"] = max(peak["rss"], server.memory_info().rss)
            await asyncio.sleep(0.05)

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    raw = RawPool(url, concurrency) if client_kind == "raw" else None
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as client:

        async def post(i: int) -> tuple[int, bytes]:
            if raw is not None:
                return await raw.post(i % len(bodies), bodies)
            async with client.post("/predict", data=bodies[i % len(bodies)], headers=headers) as reply:
                return reply.status, await reply.read()

        async def one(i: int, timed: bool) -> None:
            nonlocal errors, dropped
            async with gate:
                start = time.perf_counter()
                try:
                    status, body = await post(i)
                except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError,
                        ValueError):
                    dropped += timed  # no reply at all, or no HTTP reply: refused, reset, cut or timed out
                    return
                try:
                    ok = status == 200 and len(json.loads(body)["predictions"]) == 1
                except (ValueError, KeyError, TypeError):  # a reply that is not the JSON asked for: an error
                    ok = False
                if timed:
                    latencies.append(time.perf_counter() - start)
                    errors += not ok

        await asyncio.gather(*(one(i, False) for i in range(2 * concurrency)))  # warm connections and the model
        before = await batch_stats(client)
        sampler = asyncio.create_task(sample_rss())
        cpu = (sum(server.cpu_times()[:2]), sum(os.times()[:2]))
        start = time.perf_counter()
        await asyncio.gather(*(one(i, True) for i in range(requests)))
        wall = time.perf_counter() - start
        cpu = (sum(server.cpu_times()[:2]) - cpu[0], sum(os.times()[:2]) - cpu[1])
        sampler.cancel()
        after = await batch_stats(client)
    if raw is not None:
        raw.close()
    calls = after[1] - before[1]
    ms = [x * 1000 for x in latencies] or [float("nan")]
    return {"concurrency": concurrency, "requests": requests, "errors": errors, "dropped": dropped,
            "p50": percentile(ms, 50), "p90": percentile(ms, 90), "p99": percentile(ms, 99),
            "throughput": len(latencies) / wall, "rss_mb": peak["rss"] / 2**20,
            "batch": (after[0] - before[0]) / calls if calls else float("nan"),
            "server_cpu": cpu[0] * 1000 / requests, "client_cpu": cpu[1] * 1000 / requests}


class RawPool:
    """`size` keep-alive HTTP/1.1 connections for POST /predict; a request takes one and gives it back.

    What it skips compared with a general client (and why that is safe here): no redirects, cookies or
    chunked replies (uvicorn answers these JSON bodies with a Content-Length; a reply without one counts
    as dropped), one request per connection at a time.
    """

    def __init__(self, url: str, size: int) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.idle: asyncio.Queue = asyncio.Queue()
        for _ in range(size):
            self.idle.put_nowait(None)  # opened on first use
        self.open: list[asyncio.StreamWriter] = []
        self.head = f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"

    async def post(self, key: int, bodies: list[bytes]) -> tuple[int, bytes]:
        conn = await self.idle.get()
        try:
            if conn is None:
                conn = await asyncio.open_connection(self.host, self.port)
                self.open.append(conn[1])
            reader, writer = conn
            body = bodies[key]
            async with asyncio.timeout(60):
                writer.write(f"{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if not head.startswith(b"HTTP/1.1 ") or length is None:
                    raise ValueError(f"not an HTTP/1.1 reply with a Content-Length: {head[:80]!r}")
                reply = int(head[9:12]), await reader.readexactly(int(length.group(1)))
        except BaseException:
            if conn is not None:
                conn[1].close()
            self.idle.put_nowait(None)  # a broken connection is replaced by a fresh one
            raise
        self.idle.put_nowait(conn)
        return reply

    def close(self) -> None:
        for writer in self.open:
            writer.close()


async def batch_stats(client: aiohttp.ClientSession) -> tuple[float, float]:
    """(rows, calls) the server's model has run so far, from its /metrics."""
    async with client.get("/metrics") as reply:
        text = await reply.text()
    rows = re.search(r"^deploykit_batch_rows_sum (\S+)$", text, re.MULTILINE)
    calls = re.search(r"^deploykit_batch_rows_count (\S+)$", text, re.MULTILINE)
    return float(rows.group(1)), float(calls.group(1))


def cpu_line() -> str:
    from deploykit.hardware import cpu_flags, describe

    have = [f for f in FLAGS if f in cpu_flags()]
    return f"CPU: {describe()['cpu']}, {os.cpu_count()} cores; flags: {' '.join(have) or 'none of ' + ', '.join(FLAGS)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default="runs/sst2-minilm/quantize", type=Path)
    ap.add_argument("--requests", type=int, default=1000, help="timed requests per concurrency level")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--threads", type=int, default=None, help="runtime threads (server and offline alike)")
    ap.add_argument("--server-threads", type=int, default=None,
                    help="the server's runtime threads only (default: --threads, else deploykit serve's own default)")
    ap.add_argument("--server-workers", type=int, default=None,
                    help="the server's model calls at once (default: deploykit serve's own)")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--offline-calls", type=int, default=500, help="timed batch-1 calls offline")
    ap.add_argument("--client", choices=["raw", "aiohttp"], default="raw",
                    help="the load generator: a minimal HTTP/1.1 client (default) or aiohttp")
    args = ap.parse_args()
    if not args.folder.is_dir():
        raise SystemExit(f"{args.folder}: not an artifact folder (run the main job first, or name one)")
    if min(args.concurrency) < 1 or args.requests < 1 or args.offline_calls < 1:
        raise SystemExit("--concurrency, --requests and --offline-calls must be at least 1")
    texts = read_texts(Path(os.environ.get("DEPLOYKIT_DATA_DIR", "../shared/data")))

    from deploykit.errors import UserError

    try:
        before = offline(args.folder, texts, args.threads, args.offline_calls)
    except UserError as err:  # not a model folder, no tokenizer, an unknown runtime: one line
        raise SystemExit(f"error: {err}") from None
    proc, url, log = start_server(args.folder, args)
    try:
        asyncio.run(wait_ready(url))
        rows = [asyncio.run(drive(url, texts, c, args.requests, proc.pid, args.client)) for c in args.concurrency]
    finally:
        code = stop_server(proc)
    after = offline(args.folder, texts, args.threads, args.offline_calls)

    p50 = (before["p50_ms"] + after["p50_ms"]) / 2
    thr = (before["throughput"] + after["throughput"]) / 2
    print(f"{args.folder} on {before['runtime']}, batching {'on' if before['batch_invariant'] else 'off'} "
          f"(--max-batch {args.max_batch}, --max-wait-ms {args.max_wait_ms:g}), threads "
          f"{args.threads or 'default'} offline, {args.server_threads or args.threads or 'default'} in the server; "
          f"client {args.client}")
    print(cpu_line())
    started = next((line.strip() for line in log if line.startswith("serve:")), "?")
    print(f"server: {started}; exit code {code} after SIGTERM\n")
    print("| concurrency | requests | errors | dropped | p50 ms | p90 ms | p99 ms | req/s | mean batch rows "
          "| server CPU ms/req | client CPU ms/req | server peak RSS MB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['dropped']} | {r['p50']:.2f} | "
              f"{r['p90']:.2f} | {r['p99']:.2f} | {r['throughput']:.1f} | {r['batch']:.1f} | {r['server_cpu']:.2f} | "
              f"{r['client_cpu']:.2f} | {r['rss_mb']:.0f} |")
    print(f"\noffline (in-process predictor, before / after the server): batch-1 p50 {before['p50_ms']:.2f} / "
          f"{after['p50_ms']:.2f} ms, batch-32 {before['throughput']:.1f} / {after['throughput']:.1f} sentences/s; "
          f"CPU per sentence {before['cpu1_ms']:.2f} / {after['cpu1_ms']:.2f} ms at batch 1, "
          f"{before['cpu32_ms']:.2f} / {after['cpu32_ms']:.2f} ms at batch 32\n")
    by = {r["concurrency"]: r for r in rows}
    clean = all(r["errors"] == 0 and r["dropped"] == 0 for r in rows)
    print(f"- {'PASS' if clean else 'FAIL'}: no errors and no dropped requests at any concurrency")
    if 1 in by:
        gap = by[1]["p50"] - p50
        print(f"- {'PASS' if gap <= 1.0 else 'FAIL'}: concurrency 1 p50 {by[1]['p50']:.2f} ms is {gap:+.2f} ms "
              f"from offline batch-1 p50 {p50:.2f} ms (target: within 1 ms)")
    if 32 in by:
        share = by[32]["throughput"] / thr
        print(f"- {'PASS' if share >= 0.7 else 'FAIL'}: concurrency 32 throughput {by[32]['throughput']:.1f} req/s is "
              f"{share:.0%} of offline batch-32 {thr:.1f} sentences/s (target: >= 70%)")
    print(f"- {'PASS' if code == 0 else 'FAIL'}: the server exited "
          f"{'only on SIGKILL, 60 s after SIGTERM' if code is None else code} on SIGTERM")


if __name__ == "__main__":
    main()
