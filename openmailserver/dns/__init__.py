"""DNS: the resolver every lookup goes through, MX routing, and the record plan and checks."""
