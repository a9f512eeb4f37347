"""Writes a benchmark's figures beside the machine and versions they were measured on."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
from importlib import metadata
from pathlib import Path
from typing import Any

# Elsewhere for trial runs, which must not replace the figures recorded on a quiet machine.
RESULTS_DIR = Path(
    os.environ.get("MLCYCLE_BENCH_RESULTS_DIR") or Path(__file__).resolve().parent / "results"
)


def machine() -> dict[str, Any]:
    memory_kib = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    cpu_model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions(*packages: str) -> dict[str, str]:
    return {name: metadata.version(name) for name in packages}


def record(name: str, results: dict[str, Any], extra_versions: dict[str, str]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name,
        "recorded_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": {**versions("mlcycle", "kopf", "kubernetes"), **extra_versions},
        "results": results,
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def latency_summary(latencies_s: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds of latencies given in seconds."""
    ms = [v * 1000 for v in latencies_s]
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p90_ms": round(_percentile(ms, 0.9), 2),
        "p99_ms": round(_percentile(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
    }
