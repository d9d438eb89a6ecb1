"""The Python original's figures for `cargo xtask bench`, measured with its own host
classes (RemotePluginProxy, QueueScheduler, validation) on the fixture plugins in
tests/fixtures/python/cjm-echo-py. Prints one JSON object on its last line:
{"metric": {"value": v, "unit": u}, ..., "skipped": {"metric": "reason"}}."""

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True)
    parser.add_argument("--plugin-path", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--host-child", action="store_true")
    return parser.parse_args()


ARGS = parse_args()
# The original writes its logs under ~/.cjm: keep them in the work folder.
os.environ["HOME"] = ARGS.work

from cjm_plugin_system.core.proxy import RemotePluginProxy  # noqa: E402
from cjm_plugin_system.core.metadata import PluginMeta  # noqa: E402
from cjm_plugin_system.core.scheduling import QueueScheduler  # noqa: E402
from cjm_plugin_system.utils.validation import (  # noqa: E402
    SCHEMA_MAX, SCHEMA_MIN, SCHEMA_MAX_LEN, validate_config,
)


def manifest(name, cls="EchoPlugin", module="cjm_echo_py.plugin"):
    return {
        "name": name,
        "version": "0.1.0",
        "python_path": sys.executable,
        "module": module,
        "class": cls,
        "env_vars": {"PYTHONPATH": ARGS.plugin_path},
    }


def quiet(fn, *args, **kwargs):
    """The original prints progress to stdout; keep stdout for the result line."""
    saved = sys.stdout
    sys.stdout = sys.stderr
    try:
        return fn(*args, **kwargs)
    finally:
        sys.stdout = saved


def median_ms(samples):
    return statistics.median(samples) * 1000.0


results = {}
skipped = {}


def put(name, value, unit):
    results[name] = {"value": value, "unit": unit}


def host_child():
    proxy = quiet(RemotePluginProxy, manifest("echo-child"))
    print(proxy.process.pid, flush=True)
    while True:
        time.sleep(3600)


def spawn_and_footprint(reps):
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        proxy = quiet(RemotePluginProxy, manifest("echo"))
        samples.append(time.perf_counter() - start)
        quiet(proxy.cleanup)
    put("spawn_ready_ms", median_ms(samples), "ms")


def exec_figures(proxy, reps):
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        proxy.execute("hi")
        samples.append(time.perf_counter() - start)
    samples.sort()
    put("exec_p50_us", statistics.median(samples) * 1e6, "us")
    put("exec_p99_us", samples[min(len(samples) - 1, round((len(samples) - 1) * 0.99))] * 1e6, "us")


async def rps(proxies, in_flight, window):
    deadline = time.perf_counter() + window
    counts = [0] * in_flight

    async def lane(index):
        proxy = proxies[index % len(proxies)]
        while time.perf_counter() < deadline:
            await proxy.execute_async("hi")
            counts[index] += 1

    start = time.perf_counter()
    await asyncio.gather(*(lane(i) for i in range(in_flight)))
    return sum(counts) / (time.perf_counter() - start)


async def stream_rate(proxy, chunks):
    start = time.perf_counter()
    received = 0
    async for _ in proxy.execute_stream(chunks):
        received += 1
    assert received == chunks, received
    return chunks / (time.perf_counter() - start)


def payload_rate(proxy, mib, reps):
    text = "x" * (mib * 1024 * 1024)
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        result = proxy.execute(text)
        samples.append(time.perf_counter() - start)
        assert len(result["result"]) == len(text)
    return mib / statistics.median(samples)


class TextFile:
    """A FileBackedDTO, as the original's callers write them."""

    def __init__(self, text):
        self.text = text

    def to_temp_file(self):
        f = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, dir=ARGS.work)
        with f:
            f.write(self.text)
        return f.name


def file_backed(reps):
    proxy = quiet(RemotePluginProxy, manifest("wordcount", "WordCountPlugin", "cjm_echo_py.wordcount"))
    text = "lorem ipsum dolor sit amet\n" * (100 * 1024 * 1024 // 27)
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        result = proxy.execute(TextFile(text))
        samples.append(time.perf_counter() - start)
        assert result["bytes"] == len(text)
    quiet(proxy.cleanup)
    put("filebacked_100mib_ms", median_ms(samples), "ms")


def parent_death(reps):
    samples = []
    for _ in range(reps):
        host = subprocess.Popen(
            [sys.executable, __file__, "--work", ARGS.work, "--plugin-path", ARGS.plugin_path, "--host-child"],
            stdout=subprocess.PIPE,
        )
        worker = int(host.stdout.readline())
        start = time.perf_counter()
        host.kill()
        host.wait()
        while alive(worker):
            time.sleep(0.0005)
        samples.append(time.perf_counter() - start)
    put("parent_death_ms", median_ms(samples), "ms")


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except OSError:
        return False


def queue_wake():
    """A waiter on the original's QueueScheduler; the resource frees at a random phase of
    its 2 s poll (the original has no release notification)."""
    meta = PluginMeta(name="needy", version="0")
    meta.manifest = {"resources": {"min_system_ram_mb": 1000}}
    state = {"free": 0, "freed_at": None}
    scheduler = QueueScheduler(timeout=30.0, poll_interval=2.0)

    async def stats():
        return {"memory_available_mb": state["free"]}

    async def release_later(delay):
        await asyncio.sleep(delay)
        state["free"] = 10_000
        state["freed_at"] = time.perf_counter()

    async def once(delay):
        state["free"] = 0
        releaser = asyncio.ensure_future(release_later(delay))
        admitted = await scheduler.allocate_async(meta, stats)
        await releaser
        assert admitted
        return time.perf_counter() - state["freed_at"]

    samples = [quiet(asyncio.run, once(delay)) for delay in (0.3, 0.9, 1.5)]
    put("queue_wake_ms", median_ms(samples), "ms")


@dataclass
class SmallConfig:
    model: str = field(default="tiny", metadata={SCHEMA_MAX_LEN: 32})
    repeat: int = field(default=1, metadata={SCHEMA_MIN: 1, SCHEMA_MAX: 100})
    temperature: float = field(default=0.5, metadata={SCHEMA_MIN: 0.0, SCHEMA_MAX: 2.0})


def validate_figure():
    config = SmallConfig()
    rounds = 100_000
    start = time.perf_counter()
    for _ in range(rounds):
        ok, _ = validate_config(config)
    assert ok
    put("validate_config_us", (time.perf_counter() - start) / rounds * 1e6, "us")


def start_failure():
    broken = manifest("broken", "Nothing", "no_such_module_anywhere")
    start = time.perf_counter()
    try:
        quiet(RemotePluginProxy, broken)
    except Exception:
        pass
    put("start_failure_ms", (time.perf_counter() - start) * 1000.0, "ms")


def anonymous_kib(pid):
    """The process's own memory: anonymous pages, not code shared with the page cache."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Anonymous:"):
                return float(line.split()[1])
    return float("nan")


def main():
    if ARGS.host_child:
        host_child()
        return
    quick = ARGS.quick
    spawn_and_footprint(2 if quick else 5)
    proxy = quiet(RemotePluginProxy, manifest("echo"))
    time.sleep(0.2)
    import psutil

    put("worker_idle_rss_mib", psutil.Process(proxy.process.pid).memory_info().rss / (1024 * 1024), "MiB")
    put("worker_idle_anon_mib", anonymous_kib(proxy.process.pid) / 1024, "MiB")
    exec_figures(proxy, 50 if quick else 300)
    window = 1.0 if quick else 3.0
    put("exec_rps_c32", asyncio.run(rps([proxy], 32, window)), "calls/s")
    others = [quiet(RemotePluginProxy, manifest(f"echo-{i}")) for i in range(1, 4)]
    put("exec_rps_c32_4w", asyncio.run(rps([proxy] + others, 32, window)), "calls/s")
    for other in others:
        quiet(other.cleanup)
    put("stream_chunks_per_s", asyncio.run(stream_rate(proxy, 5_000 if quick else 20_000)), "chunks/s")
    put("payload_1mib_mib_s", payload_rate(proxy, 1, 2 if quick else 5), "MiB/s")
    put("payload_10mib_mib_s", payload_rate(proxy, 10, 1 if quick else 3), "MiB/s")
    quiet(proxy.cleanup)
    file_backed(1 if quick else 3)
    parent_death(2 if quick else 3)
    queue_wake()
    validate_figure()
    if quick:
        skipped["start_failure_ms"] = "takes the original's full 30 s start timeout; skipped in --quick"
    else:
        start_failure()
    skipped["load_all_100_ms"] = "the original starts workers one after another, about 0.6 s each"
    skipped["host_rss_100_mib"] = "needs load_all_100"
    print(json.dumps({**results, "skipped": skipped}))


main()
