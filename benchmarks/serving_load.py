"""The open-loop load of the serving benchmarks (``benchmarks/serving.py``,
``benchmarks/session_serving.py``).

Request i is *scheduled* at ``i / rate`` seconds and timed from that moment,
whether or not earlier requests have finished, so a server that falls behind
shows its queueing in the latency (a closed-loop client, which waits for each
answer before sending the next, hides it).  A request past its timeout, a
connection failure and any status other than 200 are errors; an answer with
the ``X-Feedrank-Degraded`` header is degraded.
"""
from __future__ import annotations

import asyncio
import json
import statistics
from typing import Callable, Dict, List, Optional, Sequence, Union

import aiohttp

DEGRADED_HEADER = "X-Feedrank-Degraded"  # serving.transformer.ranker.DEGRADED_HEADER
SETTLE_S = 3.0      # a disrupted load goes on this long after the disruption ended
MAX_EXTRA_S = 90.0  # and at most this long beyond its duration


def _quantile(values: List[float], p: float) -> Optional[float]:
    return round(values[min(len(values) - 1, int(p * len(values)))] * 1e3, 2) if values else None


async def open_loop(url: str, body: Union[bytes, Sequence[bytes]], rate: float, duration_s: float,
                    timeout_s: float, during: Optional[Callable[[], Dict]] = None, at_s: float = 0.0,
                    versions: bool = False) -> Dict:
    """Fires ``rate * duration_s`` requests on schedule; latencies from the scheduled start.

    ``body`` is one body for every request, or a sequence of bodies, request i
    sending ``body[i % len(body)]``.  ``during`` runs in a thread ``at_s``
    seconds into the load (a disruption); the load then goes on until
    ``SETTLE_S`` after it returned (at most ``MAX_EXTRA_S`` beyond
    ``duration_s``), and the result holds its answer and the schedule offsets
    of the errors and degraded answers (``bad_at_s``).  ``versions`` counts
    the ``model_version`` of the answers.  ``client_lag_p99_ms`` is how late
    the client itself sent (a busy client inflates the latencies)."""
    latencies: List[float] = []
    lags: List[float] = []
    errors: Dict[str, int] = {}
    degraded: List[float] = []
    bad: List[float] = []
    seen: Dict[str, int] = {}
    done: List[float] = []
    tasks: List[asyncio.Task] = []
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=0, force_close=False)) as session:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.05

        async def one(i: int) -> None:
            scheduled = t0 + i / rate
            await asyncio.sleep(max(0.0, scheduled - loop.time()))
            lags.append(loop.time() - scheduled)
            try:
                data = body if isinstance(body, bytes) else body[i % len(body)]
                async with session.post(url, data=data, headers=headers) as r:
                    data = await r.read()
                    if r.status != 200:
                        errors[str(r.status)] = errors.get(str(r.status), 0) + 1
                        bad.append(round(scheduled - t0, 3))
                        return
                    if r.headers.get(DEGRADED_HEADER):
                        degraded.append(round(scheduled - t0, 3))
                        bad.append(degraded[-1])
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                bad.append(round(scheduled - t0, 3))
                return
            latencies.append(loop.time() - scheduled)
            if versions:
                v = str(json.loads(data).get("model_version"))
                seen[v] = seen.get(v, 0) + 1

        async def schedule() -> None:
            i = 0
            while True:
                end = duration_s
                if during:
                    settled = done[0] + SETTLE_S if done else float("inf")
                    end = min(max(end, settled), duration_s + MAX_EXTRA_S)
                if i / rate >= end:
                    return
                tasks.append(asyncio.create_task(one(i)))
                i += 1
                await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))

        async def disrupt() -> Dict:
            await asyncio.sleep(max(0.0, t0 + at_s - loop.time()))
            t = loop.time() - t0
            answer = await asyncio.to_thread(during)
            done.append(loop.time() - t0)
            return {"at_s": round(t, 2), "done_at_s": round(done[0], 2), **answer}

        start = loop.time()
        results = await asyncio.gather(schedule(), *([disrupt()] if during else []))
        await asyncio.gather(*tasks)
        wall = loop.time() - start
        n = len(tasks)
    latencies.sort()
    lags.sort()
    out = {"offered": rate, "sent": n, "ok": len(latencies), "errors": errors, "degraded": len(degraded),
           "achieved_rps": round(len(latencies) / wall, 1), "p50_ms": _quantile(latencies, 0.50),
           "p95_ms": _quantile(latencies, 0.95), "p99_ms": _quantile(latencies, 0.99),
           "max_ms": round(latencies[-1] * 1e3, 2) if latencies else None,
           "client_lag_p99_ms": _quantile(lags, 0.99)}
    if versions:
        out["versions"] = seen
    if during:
        out["load_s"] = round(n / rate, 2)
        out["disruption"] = results[-1]
        out["degraded_at_s"] = [degraded[0], degraded[-1]] if degraded else []
        out["bad_at_s"] = sorted(bad)
    return out


def summarise(runs: List[Dict]) -> Dict:
    """Median over runs of each percentile; requests, errors and degraded answers summed."""
    out = {"offered": runs[0]["offered"], "runs": len(runs), "sent": sum(r["sent"] for r in runs),
           "errors": sum(sum(r["errors"].values()) for r in runs),
           "error_kinds": {k: sum(r["errors"].get(k, 0) for r in runs) for k in sorted({k for r in runs
                                                                                       for k in r["errors"]})},
           "degraded": sum(r["degraded"] for r in runs),
           "achieved_rps": statistics.median(r["achieved_rps"] for r in runs)}
    for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "client_lag_p99_ms"):
        vals = [r[k] for r in runs if r.get(k) is not None]
        out[k] = round(statistics.median(vals), 2) if vals else None
    return out
