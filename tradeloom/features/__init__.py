"""Feature spec and the online feature engine (numpy only; the batch side renders the same spec in dbt)."""
