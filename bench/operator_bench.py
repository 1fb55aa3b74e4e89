"""Benchmark: apply many Models at once against KMock and time the operator.

    .venv/bin/python bench/operator_bench.py [--models 200]

It starts KMock (the same emulator as tests/operator), then the real operator process
(`modelyard operator`), then creates all the Models concurrently. It measures the time
until every Model has its download Job, the time until every Model has a status, and
the operator's peak resident memory (VmHWM of its process). Targets: under 60 s and
under 200 MiB for 200 Models.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import kmock  # noqa: E402

from tests.operator.kmock_cluster import Emulator, Kubectl, OperatorProcess, declare, kubeconfig  # noqa: E402

TARGET_SECONDS = 60.0
TARGET_MIB = 200.0


class BenchEmulator(Emulator):
    """The tests' emulator with a short memory.

    KMock keeps every request for assertions and matches each new request against
    that whole history: the mock's own cost grows with the square of the requests,
    and at 200 Models it, not the operator, would be measured. The bench asserts
    nothing about old requests, so it keeps the recent ones only (more than are
    ever in flight at once).
    """

    served = 0
    failures = 0  # 5xx answers: a trimmed history must not make KMock miss a request

    async def _handle(self, request):  # type: ignore[no-untyped-def]
        try:
            response = await super()._handle(request)
            self.failures += response.status >= 500
            return response
        except Exception as e:  # KMock answers 404 and 409 by raising, too
            self.failures += not (isinstance(e, kmock.KubernetesError) and e.status < 500)
            raise
        finally:
            self.served += 1
            if len(self._requests) > 100:
                del self._requests[:-50]


def model(index: int) -> dict:
    return {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": f"bench-{index:04d}"},
        "spec": {
            "kind": "llm",
            "source": {"huggingface": {"repo": "HuggingFaceTB/SmolLM2-360M-Instruct-GGUF",
                                       "file": f"smollm2-360m-instruct-q8_0-{index}.gguf"}},
            "resources": {"gpu": 1},
        },
    }


def peak_rss_mib(pid: int) -> float:
    """The high-water mark of the process's resident memory, from the kernel."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc: Linux only")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the process so far (to tell its cost from the mock's)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_until(check, timeout: float) -> float:
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            raise TimeoutError
        await asyncio.sleep(1.0)  # a list of all Jobs is a heavy request for KMock
    return time.monotonic()


async def bench(count: int, timeout: float) -> dict:
    logs: dict[str, bytes] = {}
    async with BenchEmulator() as server, kmock.Server(server) as http:
        declare(server, logs)
        kubectl = Kubectl(server, logs)
        with tempfile.TemporaryDirectory() as tmp:
            config = kubeconfig(Path(tmp) / "kubeconfig", http.port)
            operator = OperatorProcess(config, Path(tmp) / "operator.log",
                                       env={"MODELYARD_PROGRESS_INTERVAL": "5"}).start()
            try:
                await asyncio.sleep(3)  # the operator is up and watching
                idle_mib = peak_rss_mib(operator.process.pid)
                idle_cpu = cpu_seconds(operator.process.pid)
                started = time.monotonic()
                await asyncio.gather(*(kubectl.create("models", model(i)) for i in range(count)))
                applied = time.monotonic()

                async def all_jobs() -> bool:
                    return len(await kubectl.list("jobs")) >= count

                async def all_statuses() -> bool:
                    models = await kubectl.list("models")
                    return sum(1 for m in models if (m.get("status") or {}).get("phase") == "Pending") >= count

                jobs_done = await wait_until(all_jobs, timeout)
                busy_cpu = cpu_seconds(operator.process.pid) - idle_cpu
                statuses_done = await wait_until(all_statuses, timeout)
                await asyncio.sleep(2 * 5)  # two progress rounds over all Models, for the memory peak
                duplicate_jobs = len(await kubectl.list("jobs")) - count
                peak_mib = peak_rss_mib(operator.process.pid)
            finally:
                operator.stop()
            requests = server.served
    return {
        "models": count,
        "apply_seconds": round(applied - started, 2),
        "all_jobs_seconds": round(jobs_done - started, 2),
        "all_statuses_seconds": round(statuses_done - started, 2),
        "duplicate_jobs": duplicate_jobs,
        "operator_cpu_seconds_until_all_jobs": round(busy_cpu, 1),
        "operator_idle_rss_mib": round(idle_mib, 1),
        "operator_peak_rss_mib": round(peak_mib, 1),
        "api_requests": requests,
        "api_errors": server.failures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    result = asyncio.run(bench(args.models, args.timeout))
    print(json.dumps(result, indent=2))
    ok = result["all_jobs_seconds"] < TARGET_SECONDS and result["operator_peak_rss_mib"] < TARGET_MIB
    ok = ok and result["duplicate_jobs"] == 0 and result["api_errors"] == 0
    print(f"targets (<{TARGET_SECONDS:.0f} s, <{TARGET_MIB:.0f} MiB, no duplicate Job): "
          f"{'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
