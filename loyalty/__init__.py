"""Loyalty ledger domain: earn rules, accounts and the append-only points ledger."""
