"""Webhooks: signed HTTP deliveries of logged events, with retries."""
