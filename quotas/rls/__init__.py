"""Enforcement where the traffic is: Envoy's rate limit service (`server`), and what it shares with the ASGI
middleware (`quotas.asgi`): the gate (`gate`) and the draft-11 RateLimit header fields (`headers`).

Only `server` imports grpcio and xds-protos (the `rls` extra); `gate` and `headers` need neither, so the
middleware and the rest of surgewatch run without them.
"""
