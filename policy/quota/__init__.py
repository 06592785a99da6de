"""The hard quota: limits, usage read from Glance, and a ledger of the
reservations of uploads in flight, shared by every replica of the gateway."""
