"""The Prometheus expositions of the routers (admin port) and the model servers.

Without a Prometheus server the operator reads them itself: a rollout needs only the
candidate's cumulative counters, summed over its pods, at the start and the end of each
interval (`plan.inferenceservice.analysis` takes the difference). In router mode the
routers count the candidate's requests (and mirrored ones, and agreement); in the other
modes nothing of mlcycle's sits in the request path but the candidate's own model servers,
which count every request they answer.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from mlcycle.adapters.errors import UnavailableError
from mlcycle.api.v1alpha1.inferenceservice import CounterSample

SERVICE = "serving metrics"
SCRAPE_TIMEOUT_SECONDS = 2.0


def scrape(address: str, timeout: float = SCRAPE_TIMEOUT_SECONDS) -> str:
    """The exposition text of one pod (`ip:port`)."""
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as response:
            text: str = response.read().decode("utf-8")
            return text
    except (urllib.error.URLError, OSError) as error:
        raise UnavailableError(SERVICE, f"metrics of {address}: {error}") from error


def _samples(texts: Iterable[str]) -> Iterator[Sample]:
    for text in texts:
        for family in text_string_to_metric_families(text):
            yield from family.samples


def backend_sample(texts: Iterable[str], service: str, backend: str, version: str) -> CounterSample:
    """One backend's counters, summed over the routers' expositions.

    Requests and latency are counted where the backend and its version both match (a new
    candidate in the same backend slot starts from zero); mirrored requests are counted by
    backend, as the router labels them.
    """
    requests = errors = client_errors = 0.0
    shadow_requests = shadow_failures = comparisons = agreements = 0.0
    buckets: dict[str, float] = {}
    for sample in _samples(texts):
        labels = sample.labels
        if labels.get("service") != service or labels.get("backend") != backend:
            continue
        name, value = sample.name, sample.value
        versioned = labels.get("version") == version
        if name == "mlcycle_router_requests_total" and versioned:
            requests += value
            errors += value if labels.get("code", "").startswith("5") else 0.0
            client_errors += value if labels.get("code", "").startswith("4") else 0.0
        elif name == "mlcycle_router_request_duration_seconds_bucket" and versioned:
            le = labels["le"]
            buckets[le] = buckets.get(le, 0.0) + value
        elif name == "mlcycle_router_shadow_requests_total":
            shadow_requests += value
            if labels.get("result") != "ok":
                shadow_failures += value
        elif name == "mlcycle_router_shadow_comparisons_total":
            comparisons += value
        elif name == "mlcycle_router_shadow_agreements_total":
            agreements += value
    return CounterSample(
        requests=requests,
        errors=errors,
        client_errors=client_errors,
        latency_buckets=buckets,
        shadow_requests=shadow_requests,
        shadow_failures=shadow_failures,
        shadow_comparisons=comparisons,
        shadow_agreements=agreements,
    )


def predicted_classes(texts: Iterable[str], model: str, version: str) -> dict[str, float]:
    """The model servers' `mlcycle_model_predictions_total` of one version, summed over its
    pods, by `<output>=<class>`."""
    counts: dict[str, float] = {}
    for sample in _samples(texts):
        labels = sample.labels
        if sample.name != "mlcycle_model_predictions_total":
            continue
        if labels.get("model") != model or labels.get("version") != version:
            continue
        key = f"{labels.get('output', '')}={labels.get('class', '')}"
        counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def server_sample(texts: Iterable[str], model: str, version: str) -> CounterSample:
    """One version's requests and latency, summed over its model servers' expositions
    (both protocols: a client may use either)."""
    requests = errors = client_errors = 0.0
    buckets: dict[str, float] = {}
    for sample in _samples(texts):
        labels = sample.labels
        if labels.get("model") != model or labels.get("version") != version:
            continue
        if sample.name == "mlcycle_model_requests_total":
            requests += sample.value
            errors += sample.value if labels.get("code", "").startswith("5") else 0.0
            client_errors += sample.value if labels.get("code", "").startswith("4") else 0.0
        elif sample.name == "mlcycle_model_request_duration_seconds_bucket":
            buckets[labels["le"]] = buckets.get(labels["le"], 0.0) + sample.value
    return CounterSample(
        requests=requests, errors=errors, client_errors=client_errors, latency_buckets=buckets
    )


def _scrape_all(addresses: Sequence[str], missing: str) -> list[str]:
    """Every pod must answer: a sum over some of them would look like a counter reset, or
    skew a distribution. Raises UnavailableError with `missing` when there is no pod."""
    if not addresses:
        raise UnavailableError(SERVICE, missing)
    with ThreadPoolExecutor(max_workers=min(len(addresses), 8)) as pool:
        return list(pool.map(scrape, addresses))


def read_predictions(addresses: Sequence[str], model: str, version: str) -> dict[str, float]:
    texts = _scrape_all(addresses, f"no model server of version {version} is running")
    return predicted_classes(texts, model, version)


def read_server(addresses: Sequence[str], model: str, version: str) -> CounterSample:
    texts = _scrape_all(addresses, f"no model server of version {version} is running")
    return server_sample(texts, model, version)


def read_backend(
    addresses: Sequence[str], service: str, backend: str, version: str
) -> CounterSample:
    texts = _scrape_all(addresses, "no router pod is running")
    return backend_sample(texts, service, backend, version)
