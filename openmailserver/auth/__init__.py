"""Who is asking: password hashing and API keys."""
