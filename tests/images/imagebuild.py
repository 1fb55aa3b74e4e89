"""podman for the image tests: a local base image, the Dockerfile's images, and pods.

No image registry is reachable on the project's machines, so the base image is Debian
bookworm made with debootstrap from Debian's own packages and imported into podman.
It is cached outside the checkout (~/.cache/modelyard/images), so a machine makes it once.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

# Seconds each step took in this session, shown at the end of the run (the images' conftest).
# Here, not in the conftest: a test module's `from conftest import` may find another folder's.
TIMINGS: dict[str, float] = {}

ROOT = Path(__file__).resolve().parents[2]
CONF = Path(__file__).with_name("containers.conf")
CACHE = Path(os.environ.get("MODELYARD_CACHE") or Path.home() / ".cache" / "modelyard")

SUITE = "bookworm"
MIRROR = os.environ.get("MODELYARD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What the Dockerfile expects of its PYTHON_IMAGE: apt, a python3 of 3.11 or newer that
# makes virtualenvs with pip, and CA certificates for PyPI.
INCLUDE = ["python3", "python3-venv", "python3-pip", "ca-certificates"]
# Where the machine adds certificate authorities of its own (a TLS-inspecting proxy in
# front of PyPI, for one): the base trusts them too, or pip cannot reach PyPI in a build.
EXTRA_CAS = Path("/usr/local/share/ca-certificates")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class PodmanError(RuntimeError):
    pass


def environ() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONF)}


def podman(*args: str, timeout: float = 600, check: bool = True,
           log: Path | None = None) -> subprocess.CompletedProcess:
    """Run `podman ARGS` with the tests' containers.conf; output captured, or sent to `log`."""
    command = ["podman", *args]
    if log is None:
        done = subprocess.run(command, env=environ(), capture_output=True, text=True, timeout=timeout)
        output = done.stdout + done.stderr
    else:
        with open(log, "a") as out:
            out.write(f"$ {' '.join(command)}\n")
            out.flush()
            done = subprocess.run(command, env=environ(), stdout=out, stderr=subprocess.STDOUT,
                                  text=True, timeout=timeout)
        output = _tail(log)
    if check and done.returncode != 0:
        raise PodmanError(f"{' '.join(command)} exited with {done.returncode}:\n{output[-6000:]}")
    return done


def _tail(path: Path, size: int = 6000) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - size))
        return f.read().decode(errors="replace")


def _extra_cas() -> list[Path]:
    return sorted(EXTRA_CAS.glob("*.crt")) if EXTRA_CAS.is_dir() else []


def base_key() -> str:
    """Changes when anything that goes into the base image changes."""
    recipe = {"suite": SUITE, "mirror": MIRROR, "include": INCLUDE, "recipe": 1,
              "cas": [hashlib.sha256(p.read_bytes()).hexdigest() for p in _extra_cas()]}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def base_image(log: Path) -> str:
    """The local base image's tag: imported from the cached tarball, made first if need be."""
    key = base_key()
    tag = f"localhost/modelyard-test-base:{SUITE}-{key}"
    if podman("image", "exists", tag, check=False).returncode == 0:
        return tag
    images = CACHE / "images"
    images.mkdir(parents=True, exist_ok=True)
    tarball = images / f"debian-{SUITE}-python3-{key}.tar"
    with open(images / ".lock", "w") as lock:
        # Two test runs at once make it once.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tarball.exists():
            make_base_tarball(tarball, log)
    podman("import", "--change", f"ENV=PATH={PATH}", "--change", "ENV=LANG=C.UTF-8",
           "--change", 'CMD=["/bin/bash"]', str(tarball), tag, log=log)
    return tag


def make_base_tarball(tarball: Path, log: Path) -> None:
    """debootstrap a minimal Debian with Python into a tarball that `podman import` takes."""
    work = Path(tempfile.mkdtemp(prefix="base-", dir=tarball.parent))
    rootfs = work / "rootfs"
    try:
        with open(log, "a") as out:
            subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}",
                            SUITE, str(rootfs), MIRROR],
                           stdout=out, stderr=subprocess.STDOUT, check=True, timeout=1800)
        # debootstrap can leave the target's /proc mounted.
        _unmount_under(rootfs)
        for ca in _extra_cas():
            shutil.copy(ca, rootfs / "usr/local/share/ca-certificates" / ca.name)
        with open(log, "a") as out:
            subprocess.run(["chroot", str(rootfs), "update-ca-certificates"],
                           stdout=out, stderr=subprocess.STDOUT, check=True, timeout=120)
        _unmount_under(rootfs)
        for junk in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for path in (rootfs / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        partial = tarball.with_suffix(".tar.partial")
        subprocess.run(["tar", "--numeric-owner", "--one-file-system", "-C", str(rootfs),
                        "-cf", str(partial), "."], check=True, timeout=600)
        partial.rename(tarball)
    finally:
        _unmount_under(rootfs)
        if not _mounts_under(rootfs):
            shutil.rmtree(work, ignore_errors=True)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def _unmount_under(path: Path) -> None:
    for point in sorted(_mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def llama_wheels() -> Path | None:
    """The folder of the host's llama-cpp-python wheel, built by the Makefile, if there is one.

    MODELYARD_LLAMA_WHEELS names it (the Makefile sets it); otherwise the newest complete
    build of the installed version in the cache.
    """
    named = os.environ.get("MODELYARD_LLAMA_WHEELS")
    if named:
        return Path(named) if list(Path(named).glob("llama_cpp_python-*.whl")) else None
    try:
        version = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None
    built = sorted((CACHE / "wheels").glob(f"llama-cpp-python-{version}-*/.built"),
                   key=lambda p: p.stat().st_mtime)
    for stamp in reversed(built):
        if list(stamp.parent.glob(f"llama_cpp_python-{version}-*.whl")):
            return stamp.parent
    return None


def build(target: str, tag: str, *, base: str, log: Path, wheels: Path | None = None) -> float:
    """`podman build --target TARGET` of the repository's Dockerfile; returns the seconds taken.

    The build uses the host's network (apt and PyPI). When it replaces the image that the
    tag named, the old one goes, so reruns after each change do not pile up images.
    """
    before = image_id(tag)
    args = ["build", "--network", "host", "--target", target, "--build-arg", f"PYTHON_IMAGE={base}",
            "-t", tag, "-f", str(ROOT / "Dockerfile")]
    if wheels is not None:
        args += ["--build-context", f"wheels={wheels}"]
    began = time.monotonic()
    podman(*args, str(ROOT), timeout=3600, log=log)
    seconds = time.monotonic() - began
    if before and image_id(tag) != before:
        # Goes with the steps of its own that no other image shares; the build cache stays.
        podman("rmi", before, check=False)
    return seconds


def image_id(tag: str) -> str | None:
    done = podman("image", "inspect", "--format", "{{.Id}}", tag, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


@contextlib.contextmanager
def volume(name: str, uid: int, gid: int):
    """A podman volume owned by uid:gid, as fsGroup makes a fresh PVC writable in a pod."""
    podman("volume", "rm", "--force", name, check=False)
    podman("volume", "create", "--opt", f"o=uid={uid},gid={gid}", name)
    try:
        yield name
    finally:
        podman("volume", "rm", "--force", name, check=False)


def run_args(pod_spec: dict, container: dict, *, claims: dict[str, str],
             secrets: dict[tuple[str, str], str] | None = None, extra_env: dict[str, str] | None = None) -> list[str]:
    """`podman run` options that do what a kubelet does with this pod's container.

    claims maps each PVC's claimName to a podman volume; secrets maps (Secret, key) to
    the value behind a secretKeyRef. Covered: command and args, env, the pod's and the
    container's securityContext, PVC and emptyDir mounts, the memory limit. Not covered:
    probes (the test polls the same paths), CPU limits, placement.
    """
    pod_security = pod_spec.get("securityContext") or {}
    security = container.get("securityContext") or {}
    uid = security.get("runAsUser", pod_security.get("runAsUser"))
    gid = security.get("runAsGroup", pod_security.get("runAsGroup", uid))
    args: list[str] = []
    if uid is not None:
        args += ["--user", f"{uid}:{gid}"]
    if security.get("runAsNonRoot") or pod_security.get("runAsNonRoot"):
        # The kubelet refuses to start a container that would run as root.
        assert uid not in (None, 0), "runAsNonRoot without a non-root runAsUser"
    if pod_security.get("fsGroup") is not None:
        args += ["--group-add", str(pod_security["fsGroup"])]
    if security.get("readOnlyRootFilesystem"):
        # podman's --read-only alone still mounts writable tmpfs on /tmp, /run and
        # /var/tmp; a pod gets only the volumes it declares.
        args += ["--read-only", "--read-only-tmpfs=false"]
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    for cap in (security.get("capabilities") or {}).get("drop") or []:
        args += ["--cap-drop", cap.lower()]
    for cap in (security.get("capabilities") or {}).get("add") or []:
        args += ["--cap-add", cap.lower()]

    for var in container.get("env") or []:
        if "value" in var:
            args += ["--env", f"{var['name']}={var['value']}"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            args += ["--env", f"{var['name']}={(secrets or {})[(ref['name'], ref['key'])]}"]
    for name, value in (extra_env or {}).items():
        args += ["--env", f"{name}={value}"]

    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        source = volumes[mount["name"]]
        if "persistentVolumeClaim" in source:
            claim = source["persistentVolumeClaim"]
            read_only = mount.get("readOnly") or claim.get("readOnly")
            args += ["--volume", f"{claims[claim['claimName']]}:{mount['mountPath']}:{'ro' if read_only else 'rw'}"]
        elif "emptyDir" in source:
            # An emptyDir is writable by any user and not noexec (podman's --tmpfs default is).
            args += ["--tmpfs", f"{mount['mountPath']}:rw,exec,mode=1777"]
        else:
            raise NotImplementedError(f"volume {source}")

    memory = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    if memory:
        args += ["--memory", _bytes(memory)]

    command = container.get("command") or []
    if command:
        args += ["--entrypoint", command[0]]
    return args


def run_command(container: dict) -> list[str]:
    """The arguments after the image: the rest of `command`, then `args`."""
    return [*(container.get("command") or [])[1:], *(container.get("args") or [])]


def _bytes(quantity: str) -> str:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return str(int(float(quantity[: -len(suffix)]) * factor))
    return str(int(quantity))
