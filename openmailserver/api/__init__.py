"""The HTTP control plane (Starlette). One module per resource; no mail logic here."""
