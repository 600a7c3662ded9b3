"""The receiver's operational metrics in Prometheus format (``GET /metrics`` with ``serve --metrics``).

Counts and latencies only: no message ids, key ids or anything from inside a
sealed body. Each app has its own registry, so several receivers in one
process (the tests) do not share counters.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

# Decoding a radiograph takes 0.05-10 s; a folder or PACS store 1 ms-5 s.
_DECODE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ReceiverMetrics:
    """Counters and histograms of one receiver."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stored = Counter("radseal_messages_stored", "Messages stored (first time)", registry=r)
        self.duplicates = Counter("radseal_messages_duplicate", "Messages already on record, answered again", registry=r)
        self.refused = Counter("radseal_messages_refused", "Messages refused, by HTTP status and error code",
                               ["status", "code"], registry=r)
        self.bytes_in = Counter("radseal_bytes_received", "Body bytes received on POST /v1/messages", registry=r)
        self.decode_seconds = Histogram("radseal_decode_seconds", "Time to open and decode an authentic message",
                                        buckets=_DECODE_BUCKETS, registry=r)
        self.store_seconds = Histogram("radseal_store_seconds", "Time to write the derived DICOM object to the store",
                                       buckets=_STORE_BUCKETS, registry=r)

    def refusal(self, status: int, code: str) -> None:
        self.refused.labels(status=str(status), code=code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
