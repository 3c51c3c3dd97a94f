"""A local CometAPI emulator (Omni + Kling Omni video routes) rendering real H.264 MP4s.

from prefect_comet.testing.emulator import CometEmulator

with CometEmulator(latency=0.5) as emu:
    ...  # point the client at emu.base_url
"""

from .callbacks import CallbackDelivery
from .core import CometEmulator
from .faults import ALL_KINDS as FAULT_KINDS
from .faults import ROUTES
from .models import EmulatedJob, EmulatedVideo, RecordedRequest

__all__ = [
    "FAULT_KINDS",
    "ROUTES",
    "CallbackDelivery",
    "CometEmulator",
    "EmulatedJob",
    "EmulatedVideo",
    "RecordedRequest",
]
