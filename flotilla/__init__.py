"""Flotilla: short, request-scoped WebAssembly functions on stateless workers fed by RabbitMQ."""

__version__ = "0.1.0"
