"""`make bench`: run every benchmark; each records benchmarks/results/<name>.json."""

from benchmarks import reconcile_latency, trainingjob_latency

BENCHMARKS = (reconcile_latency, trainingjob_latency)

for benchmark in BENCHMARKS:
    benchmark.main()
