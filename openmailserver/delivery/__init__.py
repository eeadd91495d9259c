"""Outbound mail: DKIM signing, the queue, MX resolution and the SMTP client."""
