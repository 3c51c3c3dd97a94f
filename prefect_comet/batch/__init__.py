"""The batch flow: many requests, a bounded number in flight, one manifest of every outcome."""
