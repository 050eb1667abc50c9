"""Prometheus metrics of the server, per model (the name asked for) and variant (the model id that answered).

Each app gets its own CollectorRegistry, so several apps in one process (tests) keep separate counts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32)


class ServeMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        labels = ("model", "variant")
        self.requests = Counter("tuneloop_requests", "Requests received (answered or refused)", labels,
                                registry=self.registry)
        self.errors = Counter("tuneloop_request_errors", "Requests answered with an error", (*labels, "status"),
                              registry=self.registry)
        self.latency = Histogram("tuneloop_request_latency_seconds", "Time from request to last token", labels,
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.first_token = Histogram("tuneloop_time_to_first_token_seconds", "Time from request to first token",
                                     labels, buckets=FIRST_TOKEN_BUCKETS, registry=self.registry)
        self.prompt_tokens = Counter("tuneloop_prompt_tokens", "Prompt tokens read", labels, registry=self.registry)
        self.generation_tokens = Counter("tuneloop_generation_tokens", "Tokens generated", labels,
                                         registry=self.registry)

    def answered(self, model: str, variant: str, latency: float, ttft: float | None, prompt_tokens: int,
                 completion_tokens: int) -> None:
        self.requests.labels(model, variant).inc()
        self.latency.labels(model, variant).observe(latency)
        if ttft is not None:
            self.first_token.labels(model, variant).observe(ttft)
        self.prompt_tokens.labels(model, variant).inc(prompt_tokens)
        self.generation_tokens.labels(model, variant).inc(completion_tokens)

    def failed(self, model: str | None, variant: str | None, status: int) -> None:
        self.requests.labels(model or "", variant or "").inc()
        self.errors.labels(model or "", variant or "", str(status)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
