"""Schemathesis hooks for tests/openapi.rs: watch streams never end, so
generated list requests must not ask for one (watches have their own tests)."""

import schemathesis


@schemathesis.hook
def filter_query(ctx, query):
    return not (query and str(query.get("watch", "")).lower() in ("1", "true"))
