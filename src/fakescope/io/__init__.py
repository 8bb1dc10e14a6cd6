"""Reading images and inputs: format sniffing, safe decoding, input expansion and storage URIs."""

from fakescope.io.image import LoadedImage, decode_image, load_image, sniff_format

__all__ = ["LoadedImage", "decode_image", "load_image", "sniff_format"]
