"""Who is asking: passwords and API keys, and the failed-login throttle."""
