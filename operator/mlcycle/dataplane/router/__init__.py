"""`mlcycle router`: a small HTTP proxy in front of the versions of one InferenceService.

Exact weighted splits, header pinning for A/B tests, shadow mirroring with prediction
agreement, per-version metrics; backends from EndpointSlices, rules from a ConfigMap.

Modules: `config` (the ConfigMap contract), `selection` and `table` (pure routing
decisions), `agreement` (pure prediction comparison), `http` and `upstream` (HTTP/1.1 on
raw asyncio protocols), `proxy` (the hot path), `discovery` (Kubernetes watches),
`metrics`, `app` (the process).
"""
