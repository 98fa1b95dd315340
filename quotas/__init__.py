"""Live per-tier quotas in Redis: the model, the store, the limiter. Never imports the UI."""
