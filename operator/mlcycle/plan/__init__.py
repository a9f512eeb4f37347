"""Pure decisions: typed objects and observed state in, desired state out. No I/O here."""
