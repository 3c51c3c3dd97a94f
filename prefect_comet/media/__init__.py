"""What a stored video really is: its measurements, a poster frame, how it differs from the request.

PyAV and Pillow come with the `media` extra; without them nothing is measured and no poster is made.
"""
