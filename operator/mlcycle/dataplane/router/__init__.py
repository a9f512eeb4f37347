"""`mlcycle router`: a small HTTP and gRPC proxy in front of the versions of one
InferenceService.

Exact weighted splits, header pinning for A/B tests, shadow mirroring with prediction
agreement (HTTP only), per-version metrics; backends from EndpointSlices, rules from a
ConfigMap. HTTP/1.1 and gRPC (HTTP/2) have ports of their own and the same routing.

The ConfigMap contract is `mlcycle.api.routerconfig`, shared with the operator. Modules:
`selection` and `table` (pure routing decisions), `agreement` (pure prediction comparison),
`http` and `upstream` (HTTP/1.1 on raw asyncio protocols), `proxy` (the hot path),
`grpc_proxy` (gRPC calls forwarded on grpc.aio), `discovery` (Kubernetes watches),
`metrics`, `app` (the process).
"""
