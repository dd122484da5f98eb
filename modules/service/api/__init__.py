"""The A1111-compatible HTTP API (/sdapi/v1): hand-written request/response models and routes."""
