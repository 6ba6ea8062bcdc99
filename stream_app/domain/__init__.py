"""The decisions of the flow as plain functions: validation, rendering, ledger rules, CSV, retries."""
