"""One job's life as plain async functions: create once (with the ledger), wait, download, store."""
