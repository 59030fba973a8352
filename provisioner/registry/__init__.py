"""Device registry: models, storage, HTTP API, loan-system exports, labels."""
