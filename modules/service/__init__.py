"""Service: settings, generation service, HTTP API."""
