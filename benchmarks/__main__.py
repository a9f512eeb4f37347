"""`make bench`: run every benchmark; each records benchmarks/results/<name>.json."""

from benchmarks import reconcile_latency, router, trainingjob_latency

BENCHMARKS = (reconcile_latency, trainingjob_latency, router)

for benchmark in BENCHMARKS:
    benchmark.main()
