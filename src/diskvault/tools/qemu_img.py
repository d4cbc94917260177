"""qemu-img: inspect, create, convert, check and modify disk images.

Every function takes the image format explicitly where qemu-img accepts one,
so qemu never probes an untrusted file's format. ``binary`` defaults to
``qemu-img``; services pass ``get_settings().QEMU_IMG_PATH``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from diskvault.tools.process import DEFAULT_TIMEOUT, Process, ToolError, run

DEFAULT_BINARY = "qemu-img"
# The limits Glance uses when it runs qemu-img info on untrusted images.
INFO_PRLIMIT = ("--cpu=30", f"--as={1024**3}")
# For commands that copy or read a whole image: a multi-TiB one on slow storage takes hours.
LONG_TIMEOUT = 12 * 3600.0

_PROGRESS = re.compile(r"\((\d+(?:\.\d+)?)/100%\)")

PathArg = str | os.PathLike[str]
OptionValue = str | int | bool


class QemuImgError(ToolError):
    tool_name = "qemu-img"


@dataclass(frozen=True)
class Image:
    """An image opened with ``--image-opts``: a LUKS-encrypted qcow2 (``encrypt.key-secret``
    naming a ``--object secret``, for the image and ``depth`` backing layers under it)."""

    path: PathArg
    fmt: str = "qcow2"
    secret: str | None = None
    depth: int = 0
    file: Mapping[str, OptionValue] | None = None  # protocol options instead of the path

    def opts(self) -> str:
        options: dict[str, OptionValue] = {"driver": self.fmt}
        if self.file is not None:
            options.update({f"file.{k}": v for k, v in self.file.items()})
        else:
            options["file.filename"] = os.fspath(self.path)
        if self.secret is not None:
            for level in range(self.depth + 1):
                options["backing." * level + "encrypt.key-secret"] = self.secret
        return _options(options)


Source = PathArg | Image


def secret_object(secret_id: str, key_file: PathArg) -> str:
    """``--object`` for a secret read by qemu from a file: the key never is on a command line."""
    return f"secret,id={secret_id},file={os.fspath(key_file).replace(',', ',,')}"


def _objects(objects: Sequence[str]) -> list[str]:
    return [arg for obj in objects for arg in ("--object", obj)]


def _source(src: Source, fmt: str | None) -> list[str]:
    """``-f FMT PATH`` or ``--image-opts OPTS``."""
    if isinstance(src, Image):
        return ["--image-opts", src.opts()]
    return [*_fmt("-f", fmt), os.fspath(src)]


def _options(options: Mapping[str, OptionValue]) -> str:
    """``-o`` syntax: ``key=value`` joined by commas, commas in values doubled."""
    parts = []
    for key, value in options.items():
        text = ("on" if value else "off") if isinstance(value, bool) else str(value)
        parts.append(f"{key}={text.replace(',', ',,')}")
    return ",".join(parts)


def _fmt(flag: str, fmt: str | None) -> list[str]:
    return [flag, fmt] if fmt else []


def _json(stdout: str, cmd: list[str]) -> Any:
    try:
        return json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise QemuImgError("qemu-img printed invalid JSON", cmd=cmd, stderr=stdout[-500:]) from exc


def info(
    path: PathArg,
    fmt: str | None = None,
    *,
    binary: str = DEFAULT_BINARY,
    timeout: float = DEFAULT_TIMEOUT,
    limits: bool = True,
    force_share: bool = False,
) -> dict[str, Any]:
    """``qemu-img info --output=json``; under prlimit (30 s CPU, 1 GiB memory) by default."""
    cmd = [binary, "info", *_fmt("-f", fmt), "--output=json"]
    if force_share:
        cmd.append("-U")
    cmd.append(os.fspath(path))
    result = run(cmd, timeout=timeout, error=QemuImgError, prlimit=INFO_PRLIMIT if limits else ())
    data: dict[str, Any] = _json(result.stdout, result.cmd)
    return data


LUKS_BENCHMARK_FLAKE = "Unable to get accurate CPU usage"
LUKS_BENCHMARK_ATTEMPTS = 10  # each attempt fails about 1 time in 4 on these hosts


def create(
    path: PathArg,
    fmt: str,
    size: int | None,
    *,
    backing: PathArg | None = None,
    backing_fmt: str | None = None,
    options: Mapping[str, OptionValue] | None = None,
    objects: Sequence[str] = (),
    binary: str = DEFAULT_BINARY,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Create an image; ``size`` may be None when a backing file gives it."""
    cmd = [binary, "create", "-q", *_objects(objects), "-f", fmt]
    if backing is not None:
        cmd += ["-b", os.fspath(backing), *_fmt("-F", backing_fmt)]
    if options:
        cmd += ["-o", _options(options)]
    cmd.append(os.fspath(path))
    if size is not None:
        cmd.append(str(size))
    for attempt in range(LUKS_BENCHMARK_ATTEMPTS):
        try:
            run(cmd, timeout=timeout, error=QemuImgError)
            return
        except QemuImgError as exc:
            # QEMU times LUKS key derivation by the thread's CPU clock and gives up when one
            # round measured 0 ms (seen under load); nothing was created, so try again.
            if LUKS_BENCHMARK_FLAKE not in exc.stderr or attempt + 1 == LUKS_BENCHMARK_ATTEMPTS:
                raise


def convert(
    src: Source,
    src_fmt: str,
    dst: PathArg,
    dst_fmt: str,
    *,
    progress: Callable[[float], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    sparse: bool = True,
    out_of_order: bool = True,
    coroutines: int = 8,
    compress: bool = False,
    src_cache: str | None = None,
    dst_cache: str | None = None,
    rate_limit: int | None = None,
    options: Mapping[str, OptionValue] | None = None,
    segment: tuple[int, int] | None = None,
    objects: Sequence[str] = (),
    binary: str = DEFAULT_BINARY,
    timeout: float = LONG_TIMEOUT,
) -> None:
    """``qemu-img convert``; ``progress`` gets increasing percentages (0-100).

    Raises :class:`~diskvault.tools.process.Cancelled` when ``should_cancel``
    returns True; the caller removes the partial ``dst``. ``out_of_order``
    (``-W``) is ignored with ``compress``, which qemu-img requires in order.

    ``segment=(offset, length)`` converts only that range of the guest's disk
    into the same range of ``dst``, an existing all-zero raw file of the full
    size (a raw node with offset and size over each side, ``-n --target-is-zero``).
    """
    cmd = [binary, "convert", *_objects(objects), "-m", str(coroutines)]
    if segment is None:
        cmd += ["-O", dst_fmt]
    elif dst_fmt != "raw" or compress or options or isinstance(src, Image):
        raise ValueError("only a plain raw output can be written in segments")
    else:
        cmd += ["-n", "--target-is-zero", "--image-opts", "--target-image-opts"]
    if progress is not None:
        cmd.append("-p")
    if out_of_order and not compress:
        cmd.append("-W")
    if compress:
        cmd.append("-c")
    if not sparse:
        cmd += ["-S", "0"]
    cmd += _fmt("-T", src_cache) + _fmt("-t", dst_cache)
    if rate_limit is not None:
        cmd += ["-r", str(rate_limit)]
    if options:
        cmd += ["-o", _options(options)]
    if segment is None:
        cmd += [*_source(src, src_fmt), os.fspath(dst)]
    else:
        assert not isinstance(src, Image)
        offset, length = segment
        window: dict[str, OptionValue] = {"driver": "raw", "offset": offset, "size": length}
        src_node = {"file.driver": src_fmt, "file.file.driver": "file"}
        cmd += [
            _options({**window, **src_node, "file.file.filename": os.fspath(src)}),
            _options({**window, "file.driver": "file", "file.filename": os.fspath(dst)}),
        ]

    last = -1.0

    def on_line(line: str) -> None:
        nonlocal last
        match = _PROGRESS.search(line)
        if match and progress is not None and (value := float(match[1])) > last:
            last = value
            progress(value)

    Process(cmd, timeout=timeout, error=QemuImgError).wait(
        should_cancel=should_cancel, on_line=on_line, sep="\r"
    )


CHECK_RESULTS = {0: "clean", 2: "corrupt", 3: "leaked"}
CHECK_UNSUPPORTED = 63
CHECK_TIMEOUT = 600.0


def check(
    path: Source,
    fmt: str,
    *,
    repair: Literal["leaks", "all"] | None = None,
    objects: Sequence[str] = (),
    binary: str = DEFAULT_BINARY,
    timeout: float = CHECK_TIMEOUT,
    prlimit: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``qemu-img check --output=json`` plus ``"result"``: clean, corrupt, leaked or unsupported.

    qemu-img exits 2 for corruptions and 3 for leaked clusters only; those
    return normally so callers can decide. Exit 1 (check failed) raises.
    ``prlimit`` (e.g. :data:`INFO_PRLIMIT`) bounds it on untrusted images.
    """
    cmd = [binary, "check", *_objects(objects), "--output=json", *_fmt("-r", repair)]
    cmd += _source(path, fmt)
    result = run(cmd, timeout=timeout, error=QemuImgError, check=False, prlimit=prlimit)
    if result.returncode == CHECK_UNSUPPORTED:
        return {"result": "unsupported"}
    if result.returncode not in CHECK_RESULTS:
        raise QemuImgError(cmd=cmd, returncode=result.returncode, stderr=result.stderr)
    data: dict[str, Any] = _json(result.stdout, cmd)
    data["result"] = CHECK_RESULTS[result.returncode]
    return data


def compare(
    a: Source,
    b: Source,
    fmt_a: str | None = None,
    fmt_b: str | None = None,
    *,
    strict: bool = False,
    objects: Sequence[str] = (),
    binary: str = DEFAULT_BINARY,
    timeout: float = LONG_TIMEOUT,
) -> bool:
    """True if the two images hold the same guest-visible content.

    Not strict: a size difference is fine if the extra area reads as zeros.
    With an :class:`Image` on either side both are given as ``--image-opts``.
    """
    cmd = [binary, "compare", *_objects(objects)]
    if strict:
        cmd.append("-s")
    if isinstance(a, Image) or isinstance(b, Image):
        a = a if isinstance(a, Image) else Image(a, fmt_a or "raw")
        b = b if isinstance(b, Image) else Image(b, fmt_b or "raw")
        cmd += ["--image-opts", a.opts(), b.opts()]
    else:
        cmd += [*_fmt("-f", fmt_a), *_fmt("-F", fmt_b), os.fspath(a), os.fspath(b)]
    result = run(cmd, timeout=timeout, error=QemuImgError, check=False)
    if result.returncode not in (0, 1):
        raise QemuImgError(cmd=cmd, returncode=result.returncode, stderr=result.stderr)
    return result.returncode == 0


def resize(
    path: Source,
    fmt: str,
    size: int,
    *,
    shrink: bool = False,
    objects: Sequence[str] = (),
    binary: str = DEFAULT_BINARY,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    cmd = [binary, "resize", "-q", *_objects(objects)]
    if shrink:
        cmd.append("--shrink")
    run([*cmd, *_source(path, fmt), str(size)], timeout=timeout, error=QemuImgError)


def commit(
    path: Source,
    fmt: str,
    *,
    base: PathArg | None = None,
    drop: bool = False,
    objects: Sequence[str] = (),
    binary: str = DEFAULT_BINARY,
    timeout: float = LONG_TIMEOUT,
) -> None:
    """Write ``path``'s data into its backing file (or ``base`` further down the chain).

    ``drop=True`` then empties ``path`` (qemu-img's default); ``drop=False``
    keeps its data (``-d``). With ``base`` qemu-img always keeps it.
    """
    cmd = [binary, "commit", "-q", *_objects(objects)]
    if base is not None:
        cmd += ["-b", os.fspath(base)]
    if not drop:
        cmd.append("-d")
    run([*cmd, *_source(path, fmt)], timeout=timeout, error=QemuImgError)


def rebase(
    path: Source,
    fmt: str,
    backing: PathArg | None,
    backing_fmt: str | None,
    *,
    unsafe: bool = False,
    objects: Sequence[str] = (),
    binary: str = DEFAULT_BINARY,
    timeout: float = LONG_TIMEOUT,
) -> None:
    """Change ``path``'s backing file; ``backing=None`` flattens it (copies all data in).
    ``backing`` may be a ``json:`` filename (how an encrypted new backing gets its secret)."""
    cmd = [binary, "rebase", "-q", *_objects(objects)]
    if unsafe:
        cmd.append("-u")
    cmd += ["-b", os.fspath(backing) if backing is not None else ""]
    if backing is not None:
        cmd += _fmt("-F", backing_fmt)
    run([*cmd, *_source(path, fmt)], timeout=timeout, error=QemuImgError)


def measure(
    src: PathArg,
    fmt: str,
    target_fmt: str,
    *,
    options: Mapping[str, OptionValue] | None = None,
    binary: str = DEFAULT_BINARY,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """Bytes a conversion needs: ``{"required": ..., "fully-allocated": ...}``."""
    cmd = [binary, "measure", "--output=json", "-O", target_fmt]
    if options:
        cmd += ["-o", _options(options)]
    result = run([*cmd, "-f", fmt, os.fspath(src)], timeout=timeout, error=QemuImgError)
    data: dict[str, Any] = _json(result.stdout, result.cmd)
    return data


def map(
    path: PathArg,
    fmt: str,
    *,
    binary: str = DEFAULT_BINARY,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[dict[str, Any]]:
    """Allocation map: ``[{"start", "length", "data", "zero", ...}, ...]``."""
    cmd = [binary, "map", "--output=json", "-f", fmt, os.fspath(path)]
    result = run(cmd, timeout=timeout, error=QemuImgError)
    data: list[dict[str, Any]] = _json(result.stdout, result.cmd)
    return data


BitmapAction = Literal["add", "remove", "clear", "enable", "disable"]


def bitmap(
    path: PathArg,
    name: str,
    action: BitmapAction,
    *,
    fmt: str = "qcow2",
    granularity: int | None = None,
    binary: str = DEFAULT_BINARY,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Add, remove, clear, enable or disable a persistent dirty bitmap of a qcow2 image."""
    cmd = [binary, "bitmap", f"--{action}", "-f", fmt]
    if granularity is not None:
        cmd += ["-g", str(granularity)]
    run([*cmd, os.fspath(path), name], timeout=timeout, error=QemuImgError)
