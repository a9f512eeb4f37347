"""`make bench`: run every benchmark; each records benchmarks/results/<name>.json."""

from benchmarks import model_server, reconcile_latency

BENCHMARKS = (reconcile_latency, model_server)

for benchmark in BENCHMARKS:
    benchmark.main()
