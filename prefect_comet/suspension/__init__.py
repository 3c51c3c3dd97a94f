"""Waiting without a worker: a deployment run suspends while its jobs render, and is resumed when they are done."""
