"""Message authentication: DKIM keys and signing, SPF/DKIM/DMARC verification (Authentication-Results)."""
