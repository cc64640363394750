"""The HTTP service and what its workers share. Never imports torch, transformers or peft
(tests/unit/test_layers.py checks).

    app.py, admin.py, migrate.py   entry points: the ASGI app, the operator CLI, the migrations
    api/                           the HTTP layer: routes, auth, limits, schemas, streams, dashboard
    shared/                        what the API and the workers both use: settings, the store,
                                   events, artifacts, the queue, quotas, logging
"""
