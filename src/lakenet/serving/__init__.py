"""Online serving: `lakenet serve` puts a registered model behind HTTP with micro-batching, load shedding,
deadlines, a bearer token and Prometheus metrics.

Import `lakenet.serving.app` / `.server` only when serving: they import FastAPI and uvicorn (the `serve` extra).
`lakenet.serving.settings` is light and validates the settings first.
"""
