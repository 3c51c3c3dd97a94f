"""What a person sees of a job in Prefect: progress, a summary of the stored video, events.

Nothing here may fail a paid generation: every publisher logs its own trouble and goes on.
"""
