"""Image intake: what the corpus stage accepts as an image, and how every stage opens one.

An image is accepted when it holds at most 10 MB and Pillow decodes it whole (every pixel, so a
truncated file is caught at intake, not in the middle of an embedding run). It is stored as its
raw bytes, whose sha256 is its content hash, and opened upright (EXIF orientation applied) in RGB,
so a photo taken sideways embeds the way people see it.
"""

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_IMAGE_BYTES = 10 * 1024 * 1024
# Files a directory or an s3:// prefix holds as images; anything else there is not an image.
IMAGE_FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageProblem:
    reason: str
    detail: str


class ImageRefused(ValueError):
    def __init__(self, problem: ImageProblem):
        super().__init__(f"{problem.reason}: {problem.detail}")
        self.problem = problem


def image_size_problem(size: int) -> ImageProblem | None:
    """Checked before reading, where the size is known first (a file, an S3 object)."""
    if size == 0:
        return ImageProblem("empty_image", "the image file holds zero bytes")
    if size > MAX_IMAGE_BYTES:
        return ImageProblem("image_too_large", f"{size:,} bytes, limit {MAX_IMAGE_BYTES:,}")
    return None


def _decode_problem(error: Exception, data: bytes) -> ImageProblem:
    if isinstance(error, UnidentifiedImageError):
        return ImageProblem("unsupported_image_format", f"Pillow decodes no image from it (first bytes {data[:16]!r})")
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageProblem("image_too_large", str(error))
    if "truncated" in str(error).lower():
        return ImageProblem("truncated_image", str(error))
    return ImageProblem("corrupt_image", f"{type(error).__name__}: {error}")


def open_image(data: bytes) -> Image.Image:
    """The image decoded whole, upright and in RGB; raises ImageRefused with the reason it cannot be."""
    problem = image_size_problem(len(data))
    if problem:
        raise ImageRefused(problem)
    try:
        with warnings.catch_warnings():
            # Over Pillow's MAX_IMAGE_PIXELS (about 89 million): a decompression bomb, not a photo to embed.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                return ImageOps.exif_transpose(image).convert("RGB")
    except Exception as error:  # noqa: BLE001 - Pillow signals bad input with many exception types
        raise ImageRefused(_decode_problem(error, data)) from error


def find_image_problem(data: bytes) -> ImageProblem | None:
    """Why these bytes must not be embedded as an image, or None when they are fine."""
    try:
        open_image(data)
    except ImageRefused as refused:
        return refused.problem
    return None
