"""The `prefect-comet` console command: generate, batch, jobs, resume, emulator and callbacks, one module each.

Example:
    ```bash
    prefect-comet generate "A paper boat on a pond" --dest s3://bucket/clips
    ```
"""
