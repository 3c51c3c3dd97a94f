"""Test support shipped with the package: a local CometAPI emulator and a terminal runner."""
