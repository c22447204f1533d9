"""The admin port: health, readiness, metrics, shutdown, log level."""
