"""The Flotilla dispatcher: HTTP API, function registry, jobs and the AMQP client."""
