"""Image-to-video pipeline (Kling Omni): a local picture becomes the first frame of a clip.

Against the local emulator (a sample picture is drawn when none is given):

    python flows/image_to_video.py --emulator

Against CometAPI:

    COMETAPI_KEY=sk-... python flows/image_to_video.py photo.jpg "The boat sets sail" --end-image last.jpg
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Literal

from prefect import flow

from prefect_comet import (
    CometAPICredentials,
    KlingImage,
    KlingOmniVideoRequest,
    StoredVideo,
    abandon_unstored_jobs,
    generate_video,
)
from prefect_comet.testing.terminal import add_run_arguments, run_pipeline

DEFAULT_PROMPT = "The scene in <<<image_1>>> slowly comes to life"


@flow(name="image-to-video", on_cancellation=[abandon_unstored_jobs], on_crashed=[abandon_unstored_jobs])
async def image_to_video(
    image: str,
    prompt: str = DEFAULT_PROMPT,
    end_image: str | None = None,
    duration: Literal["5", "10"] = "5",
    mode: Literal["std", "pro"] = "pro",
    destination: str = "./videos",
    credentials_block: str | None = None,
    ledger_uri: str | None = None,
    poll_interval_seconds: float = 2.0,
) -> StoredVideo:
    """Animate a picture with Kling Omni and store the clip under `destination`.

    Args:
        image: First frame: a local JPG/PNG path on the worker, or an http(s) URL.
        prompt: What happens; `<<<image_1>>>` refers to the first frame.
        end_image: Optional last frame, a path or URL like `image`.
        duration: Clip length in seconds.
        mode: `std` (faster, cheaper) or `pro` (higher quality).
        destination: Any fsspec URL or local folder.
        credentials_block: Name of a saved CometAPI Credentials block; COMETAPI_KEY when empty.
        ledger_uri: The job ledger's folder (any fsspec URL); empty keeps it beside the videos.
        poll_interval_seconds: First poll interval in seconds.
    """
    credentials = await CometAPICredentials.aload(credentials_block) if credentials_block else None
    frames = [KlingImage(image_url=image, type="first_frame")]
    if end_image:
        frames.append(KlingImage(image_url=end_image, type="end_frame"))
    request = KlingOmniVideoRequest(prompt=prompt, image_list=frames, duration=duration, mode=mode)
    return await generate_video(
        request,
        destination=destination,
        credentials=credentials,
        ledger_uri=ledger_uri or None,
        poll_interval_seconds=poll_interval_seconds,
    )


def _sample_picture() -> str:
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (1280, 960), (90, 160, 210))
    ImageDraw.Draw(picture).polygon([(440, 620), (840, 620), (760, 700), (520, 700)], fill=(250, 250, 240))
    path = Path(tempfile.mkdtemp()) / "sample.png"
    picture.save(path)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Animate a picture with Kling Omni.")
    parser.add_argument("image", nargs="?", help="first frame (path or URL); a sample with --emulator")
    parser.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT)
    parser.add_argument("--end-image")
    parser.add_argument("--duration", default="5", choices=["5", "10"])
    parser.add_argument("--mode", default="pro", choices=["std", "pro"])
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    if not args.image and not args.emulator:
        parser.error("give an image path or URL (or --emulator for a sample picture)")
    image = args.image or _sample_picture()
    run_pipeline(
        lambda poll_interval: image_to_video(
            image=image,
            prompt=args.prompt,
            end_image=args.end_image,
            duration=args.duration,
            mode=args.mode,
            destination=args.destination,
            credentials_block=args.block,
            ledger_uri=args.ledger,
            poll_interval_seconds=poll_interval,
        ),
        emulator=args.emulator,
        latency=args.latency,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
