"""File names from data (class names, row ids) made safe: no path separators, no dot-files,
no collisions between two names that sanitise alike."""

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(text: str, max_length: int = 80) -> str:
    cleaned = _UNSAFE.sub("_", str(text)).strip("._") or "unnamed"
    if cleaned == text and len(cleaned) <= max_length:
        return cleaned
    # Different originals that clean to the same text still get different names.
    digest = hashlib.sha1(str(text).encode()).hexdigest()[:8]
    return f"{cleaned[:max_length]}-{digest}"
