"""`make bench`: run every benchmark; each records benchmarks/results/<name>.json."""

from benchmarks import reconcile_latency, router

BENCHMARKS = (reconcile_latency, router)

for benchmark in BENCHMARKS:
    benchmark.main()
