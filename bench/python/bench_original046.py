"""The newest original's (cjm_plugin_system 0.0.46) job figures, measured through its
own PluginManager and JobQueue with its defaults, on the ticker plugin in
`ticker046/` run by its own Python worker. Prints one JSON object on its last line.

Usage: bench_original046.py --work DIR [--quick]. HOME is pointed into DIR, so that the
original's stores (config, journal, secrets under ~/.cjm) stay out of the user's."""

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True)
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    work = Path(options.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    # Before the original is imported: its configuration reads HOME.
    os.environ["HOME"] = str(work)
    here = Path(__file__).resolve().parent
    manifests = work / "manifests"
    manifests.mkdir(exist_ok=True)
    (manifests / "ticker046.json").write_text(json.dumps({
        "name": "ticker046",
        "version": "0.1.0",
        "python_path": sys.executable,
        "module": "ticker046.plugin",
        "class": "TickerPlugin",
        "env_vars": {"PYTHONPATH": str(here)},
        "config_schema": {"type": "object", "properties": {}},
    }))
    figures = asyncio.run(measure(manifests, options.quick))
    units = {"cancel_coop_ms": "ms", "cancel_forced_ms": "ms", "progress_latency_ms": "ms",
             "job_submit_us": "us", "jobs_per_s": "jobs/s"}
    print(json.dumps({name: {"value": value, "unit": units[name]}
                      for name, value in figures.items()}))


async def measure(manifests: Path, quick: bool) -> dict:
    from cjm_plugin_system.core.manager import PluginManager
    from cjm_plugin_system.core.queue import JobEventType, JobQueue

    manager = PluginManager(search_paths=[manifests])
    metas = {meta.name: meta for meta in manager.discover_manifests()}
    if not manager.load_plugin(metas["ticker046"]):
        raise SystemExit("the original could not load the ticker")
    queue = JobQueue(manager)  # its defaults: 1 s progress poll, 3 s cancel timeout
    await queue.start()
    figures = {}
    try:
        reps = 3 if quick else 8

        async def running(deaf: bool) -> str:
            job = await queue.submit("ticker046", 100000, 20, deaf)
            deadline = time.monotonic() + 30
            while queue.get_job(job).status.value != "running":
                if time.monotonic() > deadline:
                    raise SystemExit(f"the ticker job never ran: {queue.get_job(job)}")
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.05)
            return job

        # Cooperative cancel: asked -> the job has ended.
        samples = []
        for _ in range(reps):
            job = await running(False)
            start = time.perf_counter()
            await queue.cancel(job)
            await queue.wait_for_job(job, timeout=30)
            samples.append((time.perf_counter() - start) * 1000)
        figures["cancel_coop_ms"] = statistics.median(samples)

        # Forced: a plugin that ignores the cancel; asked -> the job has ended
        # (its worker is restarted as part of it).
        samples = []
        for _ in range(max(2, reps // 3)):
            job = await running(True)
            start = time.perf_counter()
            await queue.cancel(job)
            await queue.wait_for_job(job, timeout=60)
            samples.append((time.perf_counter() - start) * 1000)
        figures["cancel_forced_ms"] = statistics.median(samples)

        # Progress: reported (time in the message) -> seen by a subscriber. Reports
        # 1.3 s apart, longer than its poll and out of step with it, so that the poll
        # sees every one: each report's wait for the next poll is measured.
        ticks = 4 if quick else 10
        job = await queue.submit("ticker046", ticks, 1300, False)
        latencies = []

        async def listen() -> None:
            async for event in queue.events(job):
                if event.type == JobEventType.PROGRESS_CHANGED:
                    message = str(event.payload.get("status_message", ""))
                    if message.isdigit():
                        latencies.append((time.time_ns() - int(message)) / 1e6)
                if event.type == JobEventType.STATE_TRANSITION and event.payload.get("to") in (
                    "completed", "failed", "cancelled"):
                    return

        listener = asyncio.create_task(listen())
        await queue.wait_for_job(job, timeout=120)
        await asyncio.wait_for(listener, timeout=5)
        if latencies:
            figures["progress_latency_ms"] = statistics.median(latencies)

        # Submitting behind a running job, and trivial jobs through the queue.
        blocker = await running(False)
        count = 200 if quick else 1000
        start = time.perf_counter()
        queued = [await queue.submit("ticker046", 1, 0, False) for _ in range(count)]
        figures["job_submit_us"] = (time.perf_counter() - start) * 1e6 / count
        for job in queued:
            await queue.cancel(job)
        await queue.cancel(blocker)
        await queue.wait_for_job(blocker, timeout=30)
        count = 50 if quick else 200
        start = time.perf_counter()
        jobs = [await queue.submit("ticker046", 1, 0, False) for _ in range(count)]
        for job in jobs:
            await queue.wait_for_job(job, timeout=60)
        figures["jobs_per_s"] = count / (time.perf_counter() - start)
    finally:
        await queue.stop()
        manager.unload_all()
    return figures


if __name__ == "__main__":
    main()
