"""What sender and receiver agree on over HTTP (kept apart so a device needs no server code)."""

MESSAGES_PATH = "/v1/messages"  # POST one sealed container as the raw body
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"  # Prometheus text format, only with serve --metrics (for operators, not devices)
# Sent by radseal's sender for routing only (load balancers can hash on it);
# the receiver trusts the authenticated id inside the container, never this.
MESSAGE_ID_HEADER = "Radseal-Message-Id"
# On a receipt: "true" when the message had been stored before (a retry).
DUPLICATE_HEADER = "Radseal-Duplicate"
