"""TensorBoard event records checksummed in C instead of pure Python.

Without TensorFlow, TensorBoard's writer computes each record's CRC32C in pure Python:
about 23 ms per 100 KB, in the writer's thread, which holds the GIL meanwhile and so
competes with training. With the default diagnostics the process spent 10-18 ms of CPU
per tutorial epoch outside the main thread, and 3-6 ms with the C checksum (process
minus main-thread CPU time, 4 alternating pairs of 8-epoch runs on a 2-core machine;
the wall-time gain was lost in that machine's noise). google-crc32c's C implementation
gives the same checksums, so the event files are byte for byte the same.
"""

from __future__ import annotations

from collections.abc import Callable

_MASK_DELTA = 0xA282EAD8  # TFRecord's checksum mask


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def c_masked_crc32c() -> Callable[[bytes], int] | None:
    """TFRecord's masked CRC32C computed by google-crc32c's C code; None without it."""
    try:
        import google_crc32c
    except ImportError:
        return None
    if getattr(google_crc32c, "implementation", None) != "c":
        return None  # its pure-Python fallback is no faster than TensorBoard's

    def masked_crc32c(data: bytes) -> int:
        return _masked(google_crc32c.value(bytes(data)))

    return masked_crc32c


def use_c_checksums() -> bool:
    """Point TensorBoard's record writer at the C checksum; whether it now uses it."""
    from tensorboard.summary.writer import record_writer

    fast = c_masked_crc32c()
    if fast is None or not hasattr(record_writer, "masked_crc32c"):
        return False
    record_writer.masked_crc32c = fast
    return True
