"""SMTP front doors: our SMTP server (`session`), the MX receiver and authenticated submission."""
