"""Reading micrographs and diffraction patterns; writing results safely."""

from temcal.io.images import ImageData, read_image, write_mrc
from temcal.io.output import check_output_path, write_json, write_text

__all__ = ["ImageData", "check_output_path", "read_image", "write_json", "write_mrc", "write_text"]
