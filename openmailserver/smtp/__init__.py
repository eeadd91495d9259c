"""SMTP front doors (aiosmtpd): the MX receiver and, later, submission."""
