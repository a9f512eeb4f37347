"""`make bench`: run every benchmark; each records benchmarks/results/<name>.json."""

from benchmarks import model_server, reconcile_latency, rollout, router, trainingjob_latency

BENCHMARKS = (reconcile_latency, trainingjob_latency, model_server, router, rollout)

for benchmark in BENCHMARKS:
    benchmark.main()
