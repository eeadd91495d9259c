"""The mail flow shared by every front door (DESIGN §2): accounts, recipients,
local delivery, submission. Protocol modules call these; they never know which
protocol called them."""
