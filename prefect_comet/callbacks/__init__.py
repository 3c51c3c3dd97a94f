"""Kling callbacks: per-job callback URLs, the receiver that checks them, and in-process wake-ups."""
