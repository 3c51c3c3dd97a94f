"""Speaking HTTP to CometAPI: the client, its errors and retries, and both API families.

Nothing here imports Prefect: this folder is usable (and testable) without an engine.
"""
