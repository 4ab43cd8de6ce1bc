"""Build the sandbox image offline: a Debian base from debootstrap, then sandbox/image/Dockerfile.

No registry is reachable, so nothing is pulled. The base image is assembled from Debian packages
(the package mirror is reachable) and imported as a tarball; the sandbox image is built on top of
it with `pull=False` and no network. Both are built only when missing, and the sandbox image is
rebuilt when its build context or the base image changes (the hash is kept as an image label).

    python -m sandbox.image ensure [--image NAME]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import structlog

log = structlog.get_logger(__name__)

BASE_IMAGE = "codexbot-base:bookworm"
DEFAULT_IMAGE = "codexbot-sandbox:latest"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SOURCES_FILE = Path("/etc/apt/sources.list.d/debian.sources")
CONTEXT_DIR = Path(__file__).parent / "image"
CONTEXT_HASH_LABEL = "codexbot.context-hash"

BASE_PACKAGES = (
    "python3",
    "python3-pytest",
    "python3-venv",
    "python3-pip",
    "git",
    "ca-certificates",
    "procps",
    "patch",
    "less",
    "findutils",
    "grep",
    "sed",
    "coreutils",
    "diffutils",
)
# Caches and documentation that only make the image bigger.
ROOTFS_CLUTTER = (
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/*.bin",
    "var/lib/apt/lists/*_*",
    "var/log/*.log",
    "usr/share/man/*",
    "usr/share/info/*",
)
BASE_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["/bin/bash"]',
]
BUILD_TIMEOUT_SECONDS = 1800


class ImageBuildError(RuntimeError):
    """The base or sandbox image could not be built."""


def mirror_from_sources(text: str, default: str = DEFAULT_MIRROR) -> str:
    """The first `URIs:` of a deb822 sources file, or `default`.

    >>> mirror_from_sources("Types: deb\\nURIs: http://mirror.example/debian\\n")
    'http://mirror.example/debian'
    """
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "URIs" and value.split():
            return value.split()[0]
    return default


def debian_mirror(sources_file: Path = SOURCES_FILE) -> str:
    try:
        return mirror_from_sources(sources_file.read_text())
    except FileNotFoundError:
        return DEFAULT_MIRROR


def debootstrap_command(
    rootfs: Path, mirror: str, packages: tuple[str, ...] = BASE_PACKAGES
) -> list[str]:
    return [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(packages)}",
        SUITE,
        str(rootfs),
        mirror,
    ]


def context_hash(context_dir: Path, base_image_id: str) -> str:
    """Digest of every file in the build context and of the base image it builds on."""
    digest = hashlib.sha256(base_image_id.encode())
    for path in sorted(p for p in context_dir.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(context_dir)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def find_image(client: docker.DockerClient, name: str) -> docker.models.images.Image | None:
    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        return None


def _run_debootstrap(rootfs: Path, mirror: str) -> None:
    completed = subprocess.run(
        debootstrap_command(rootfs, mirror),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_SECONDS,
        check=False,
    )
    if completed.returncode != 0:
        tail = (completed.stdout + completed.stderr)[-4000:]
        raise ImageBuildError(f"debootstrap failed with exit code {completed.returncode}:\n{tail}")


def _remove_clutter(rootfs: Path) -> None:
    for pattern in ROOTFS_CLUTTER:
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _tar_stream(rootfs: Path) -> Iterator[bytes]:
    """The root filesystem as a tar stream, read in chunks so it never sits in memory whole."""
    command = [
        "tar",
        "--numeric-owner",
        "--exclude=./dev/*",
        "--exclude=./proc/*",
        "--exclude=./sys/*",
        "-C",
        str(rootfs),
        "-c",
        ".",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE) as tar:
        assert tar.stdout is not None
        while chunk := tar.stdout.read(1 << 20):
            yield chunk
    if tar.returncode != 0:
        raise ImageBuildError(f"tar of the root filesystem failed with exit code {tar.returncode}")


def build_base_image(client: docker.DockerClient, name: str = BASE_IMAGE) -> str:
    """debootstrap a minimal Debian with BASE_PACKAGES and import it as `name`; returns the id."""
    mirror = debian_mirror()
    repository, _, tag = name.rpartition(":")
    with tempfile.TemporaryDirectory(prefix="codexbot-rootfs-") as workdir:
        rootfs = Path(workdir) / "rootfs"
        _run_debootstrap(rootfs, mirror)
        _remove_clutter(rootfs)
        client.api.import_image_from_stream(
            _tar_stream(rootfs), repository=repository, tag=tag, changes=BASE_CHANGES
        )
    image = find_image(client, name)
    if image is None:
        raise ImageBuildError(f"importing the root filesystem did not produce {name}")
    return str(image.id)


def build_sandbox_image(client: docker.DockerClient, name: str, digest: str) -> str:
    """Build sandbox/image/Dockerfile offline as `name`, labelled with `digest`; returns the id."""
    try:
        image, _ = client.images.build(
            path=str(CONTEXT_DIR),
            tag=name,
            pull=False,
            rm=True,
            forcerm=True,
            network_mode="none",
            labels={CONTEXT_HASH_LABEL: digest},
        )
    except docker.errors.BuildError as error:
        output = "".join(str(line.get("stream", line.get("error", ""))) for line in error.build_log)
        raise ImageBuildError(f"building {name} failed: {error.msg}\n{output[-4000:]}") from error
    return str(image.id)


def ensure_image(client: docker.DockerClient, name: str = DEFAULT_IMAGE) -> str:
    """Make sure the base and sandbox images exist and are current; returns the sandbox image id."""
    started = time.monotonic()
    base = find_image(client, BASE_IMAGE)
    if base is None:
        log.info("sandbox_image.base_build", image=BASE_IMAGE, mirror=debian_mirror())
        base_id = build_base_image(client)
        log.info(
            "sandbox_image.base_built",
            image=BASE_IMAGE,
            seconds=round(time.monotonic() - started, 1),
        )
    else:
        base_id = str(base.id)
    digest = context_hash(CONTEXT_DIR, base_id)
    current = find_image(client, name)
    if current is not None and current.labels.get(CONTEXT_HASH_LABEL) == digest:
        return str(current.id)
    log.info("sandbox_image.build", image=name, reason="missing" if current is None else "changed")
    image_id = build_sandbox_image(client, name, digest)
    log.info("sandbox_image.built", image=name, seconds=round(time.monotonic() - started, 1))
    return image_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.image", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ensure = commands.add_parser(
        "ensure", help="build the base and sandbox images if missing or stale"
    )
    ensure.add_argument(
        "--image", default=DEFAULT_IMAGE, help=f"sandbox image name (default {DEFAULT_IMAGE})"
    )
    args = parser.parse_args(argv)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    try:
        image_id = ensure_image(docker.from_env(), args.image)
    except (ImageBuildError, docker.errors.DockerException) as error:
        log.error("sandbox_image.failed", image=args.image, error=str(error))
        return 1
    log.info("sandbox_image.ready", image=args.image, id=image_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
