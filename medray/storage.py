"""Where medray reads and writes: a local path or a URI (s3://, gs://, ...), through pyarrow.fs.

A location is a plain string. A local path stays one (made absolute); anything with a scheme is
resolved by `pyarrow.fs.FileSystem.from_uri`, except `s3://`, whose filesystem is built from the
standard AWS environment so that an S3-compatible store (MinIO, Ceph, moto) works too:
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION and AWS_ENDPOINT_URL_S3 (or
AWS_ENDPOINT_URL). Ray workers see these variables only through the job's runtime environment
(see `medray.cluster.worker_env`). Every failure to reach a location becomes one MedrayError that
names the location and what to do.
"""

from __future__ import annotations

import fnmatch
import glob as std_glob
import os
import posixpath
import re
from urllib.parse import urlparse

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from medray.errors import MedrayError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Variables a worker needs to reach object storage; forwarded to Ray workers when set.
STORAGE_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
               "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "GOOGLE_APPLICATION_CREDENTIALS")
# An unreachable endpoint should fail in seconds, not after the AWS SDK's minutes of retries.
S3_TIMEOUT_SECONDS = 10
S3_ATTEMPTS = 3


def is_uri(location: str) -> bool:
    return bool(_SCHEME.match(str(location)))


def normalise(location) -> str:
    """A local path made absolute; a URI unchanged apart from a trailing slash."""
    text = str(location)
    if is_uri(text):
        return text.rstrip("/") if not text.endswith("://") else text
    if text.startswith("file:"):
        return os.path.abspath(urlparse(text).path)
    return os.path.abspath(os.path.expanduser(text))


def resolve(location, key: str = "location") -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a location; MedrayError naming `key` for a scheme nothing reads."""
    text = normalise(location)
    if not is_uri(text):
        return pafs.LocalFileSystem(), text
    scheme = text.split("://", 1)[0].lower()
    if scheme in ("s3", "s3a"):
        return s3_filesystem(), text.split("://", 1)[1].rstrip("/")
    try:
        return pafs.FileSystem.from_uri(text)
    except (ValueError, OSError) as error:
        raise MedrayError(f"{key} {text}: pyarrow has no filesystem for {scheme}:// ({first_line(error)}); use a "
                          "local path, s3://bucket/prefix or gs://bucket/prefix") from None


def s3_filesystem() -> pafs.S3FileSystem:
    """S3 from the standard environment, with the endpoint override of an S3-compatible store."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    options = {"connect_timeout": S3_TIMEOUT_SECONDS, "request_timeout": S3_TIMEOUT_SECONDS,
               "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS),
               "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        options |= {"endpoint_override": parsed.netloc, "scheme": parsed.scheme}
    return pafs.S3FileSystem(**options)


def join(location: str, *parts: str) -> str:
    if is_uri(location):
        return posixpath.join(str(location).rstrip("/"), *parts)
    return os.path.join(location, *parts)


def _split(location: str) -> tuple[str, str]:
    """("s3://", "bucket/key") or ("", "/local/path")."""
    if is_uri(location):
        scheme, rest = location.split("://", 1)
        return f"{scheme}://", rest
    return "", location


def name(location: str) -> str:
    return posixpath.basename(_split(str(location))[1].rstrip("/"))


def parent(location: str) -> str:
    prefix, path = _split(str(location))
    return prefix + posixpath.dirname(path.rstrip("/"))


def relative(location: str, root: str) -> str:
    """`location` relative to the folder `root`, with forward slashes (a row id's prefix)."""
    return posixpath.relpath(_split(location)[1], _split(root)[1])


def common_parent(locations: list[str]) -> str:
    prefix = _split(locations[0])[0]
    return prefix + posixpath.commonpath([posixpath.dirname(_split(item)[1]) for item in locations])


def to_location(path: str, like: str) -> str:
    """A path inside a location's filesystem (as pyarrow and Ray report it) back into a location of
    the same kind as `like`: s3://bucket/key for S3, the path itself for a local folder."""
    if not is_uri(like):
        return path
    return f"{like.split('://', 1)[0]}://{path}"


def info(location: str, key: str) -> pafs.FileInfo:
    """The file or folder at `location`, or a MedrayError naming `key`, the location and the cure."""
    filesystem, path = resolve(location, key)
    try:
        return filesystem.get_file_info(path)
    except OSError as error:
        raise access_error(location, key, error) from None


def missing(location: str, key: str, hint: str) -> MedrayError:
    """Nothing at `location`: for object storage, says whether the bucket itself is missing."""
    check_bucket(location, key)
    return MedrayError(f"{key} {location} does not exist; {hint}")


def check_bucket(location: str, key: str) -> None:
    """A URI's bucket exists and these credentials reach it (a no-op for local paths)."""
    if is_uri(location):
        filesystem, path = resolve(location, key)
        bucket = path.split("/", 1)[0]
        if info(to_location(bucket, location), key).type == pafs.FileType.NotFound:
            raise MedrayError(f"{key} {location}: the bucket {bucket} does not exist (or these credentials "
                              "cannot see it); create it or fix the bucket name")


def list_files(location: str, key: str, recursive: bool = True) -> list[tuple[str, bool]]:
    """(location, is_folder) of everything under a folder, sorted; recursive lists files only."""
    filesystem, path = resolve(location, key)
    try:
        entries = filesystem.get_file_info(pafs.FileSelector(path, recursive=recursive))
    except OSError as error:
        raise access_error(location, key, error) from None
    found = [(to_location(entry.path, normalise(location)), entry.type == pafs.FileType.Directory)
             for entry in entries if entry.type != pafs.FileType.NotFound]
    return sorted(item for item in found if not (recursive and item[1]))


def glob(pattern: str, key: str) -> list[str]:
    """Files matching a glob (`*`, `?`, `[...]`, `**`), sorted; listed from the pattern's fixed prefix."""
    if not is_uri(pattern):
        return sorted(os.path.abspath(match) for match in std_glob.glob(pattern, recursive=True)
                      if os.path.isfile(match))
    prefix, path = _split(pattern)
    fixed = []
    for part in path.split("/"):
        if std_glob.has_magic(part):
            break
        fixed.append(part)
    # fnmatch's * crosses "/" too; Path.glob's does not, but a pattern over object keys rarely cares.
    regex = re.compile(fnmatch.translate(path.replace("**/", "*")))
    return [location for location, _ in list_files(prefix + "/".join(fixed), key)
            if regex.match(_split(location)[1])]


def parquet_file(location: str) -> pq.ParquetFile:
    filesystem, path = resolve(location)
    return pq.ParquetFile(path, filesystem=filesystem)


def open_input(location: str):
    """A seekable binary file (pyarrow NativeFile) for reading; OSError if it cannot be opened."""
    filesystem, path = resolve(location)
    return filesystem.open_input_file(path)


def read_bytes(location: str) -> bytes:
    with open_input(location) as handle:
        return handle.read()


def write_bytes(location: str, content: bytes) -> None:
    filesystem, path = resolve(location)
    filesystem.create_dir(posixpath.dirname(path) if is_uri(location) else os.path.dirname(path))
    with filesystem.open_output_stream(path) as handle:
        handle.write(content)


def access_error(location: str, key: str, error: BaseException) -> MedrayError:
    """One line for the ways object storage refuses: wrong keys, no bucket, no endpoint."""
    text = first_line(error)
    lowered = text.lower()
    if any(word in lowered for word in ("access denied", "access_denied", "accessdenied", "forbidden", "signature",
                                       "invalidaccesskeyid", "credentials")):
        cure = "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and that they reach the Ray job's env_vars)"
    elif any(word in lowered for word in ("no_such_bucket", "bucket does not exist", "no such bucket")):
        cure = "create the bucket or fix its name"
    elif any(word in lowered for word in ("curl", "connect", "resolve", "timeout", "timed out", "network")):
        cure = "check AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL and that the store is reachable from every node"
    else:
        cure = "check the location and the storage credentials"
    return MedrayError(f"{key} {location}: cannot be read ({text}); {cure}")


def first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
