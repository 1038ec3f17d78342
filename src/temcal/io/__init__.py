"""Reading micrographs and diffraction patterns; writing results safely."""

from temcal.io.images import ImageData, read_image, write_mrc
from temcal.io.output import check_output_path, write_json, write_text
from temcal.io.tilt_manifest import TiltManifest, read_tilt_images, read_tilt_manifest

__all__ = [
    "ImageData",
    "TiltManifest",
    "check_output_path",
    "read_image",
    "read_tilt_images",
    "read_tilt_manifest",
    "write_json",
    "write_mrc",
    "write_text",
]
