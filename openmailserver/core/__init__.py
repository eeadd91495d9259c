"""The mail flow shared by every front door (docs/architecture.md): accounts, recipients,
local delivery, submission. Protocol modules call these; they never know which
protocol called them."""
