"""The demo's simulated world: an embedded Valkey, a simulated GPU fleet, surge traffic. Never imports the UI."""
