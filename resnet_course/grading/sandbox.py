"""Run one submission's program in a fresh, isolated child process.

The trusted grader never imports or executes student code: it starts
``python -m resnet_course.grading.collect PROGRAM CASES OUTDIR`` here, in a child that

* runs as an unprivileged user (uid/gid 65534, "nobody") when the grader runs as root;
* sees, under bubblewrap (``bwrap``, Debian package ``bubblewrap``), only the Python
  installation, the virtual environment and the installed ``resnet_course`` package, read-only,
  plus its own work folder: the course root (``gradebook.db``, ``solutions/``, ``submitted/``,
  ``nbgrader_config.py``) does not exist in its file system; it has no network, and its own pid
  namespace, so every process it starts dies with it;
* has limits on memory (``RLIMIT_AS``), processes (``RLIMIT_NPROC``), file size and wall-clock
  time, and its whole process group is killed at the end.

Without ``bwrap`` the *plain* mode keeps the unprivileged user, the private work folder, the
limits and the process-group kill, but the child sees the machine's file system as user 65534
does, and has the network: see ``PLAIN_MODE_CAVEATS``.
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from resnet_course.startup import configured_backend

#: The unprivileged user and group the child runs as when the grader runs as root.
SANDBOX_UID = 65534
SANDBOX_GID = 65534
#: Where the work folder appears inside the bubblewrap sandbox.
SANDBOX_WORKDIR = "/grading"

PLAIN_MODE_CAVEATS = (
    "plain mode (no bubblewrap): the child runs as uid 65534 in its own folder with memory, process "
    "and time limits, but it can read every file that 'other' users may read (make gradebook.db, "
    "solutions/ and submitted/ unreadable to others: chmod -R o-rwx), it has the network, and a "
    "process that leaves its process group is only found if it stays a descendant of the grader"
)

# prctl(PR_SET_CHILD_SUBREAPER): orphans of the child are re-parented to this process, so the
# plain mode can find and kill a "detached" process that left the child's process group.
_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class Limits:
    """What one submission may use."""

    wall_seconds: float = 600.0
    memory_bytes: int = 6 * 1024**3
    #: RLIMIT_NPROC counts every process and thread of the sandbox user on the machine.
    processes: int = 1024
    file_bytes: int = 512 * 1024**2
    #: TensorFlow's and OpenMP's thread pools: cores / workers, so parallel children don't thrash.
    threads: int = 1


@dataclass
class SandboxResult:
    """How the child ended; ``reason`` is None when it exited by itself."""

    returncode: int | None
    reason: str | None
    seconds: float
    mode: str
    log_tail: str = ""
    killed_leftovers: list[int] = field(default_factory=list)


class SandboxError(RuntimeError):
    """The sandbox cannot be set up on this machine (not the student's fault)."""


def available_mode() -> str:
    """``"bwrap"`` when bubblewrap is installed and works here, else ``"plain"``."""
    if shutil.which("bwrap") is None:
        return "plain"
    probe = subprocess.run(
        ["bwrap", "--ro-bind", "/", "/", "--unshare-net", "--unshare-pid", "--proc", "/proc", "true"],
        capture_output=True, timeout=30,
    )
    return "bwrap" if probe.returncode == 0 else "plain"


def _drops_privileges() -> bool:
    return os.geteuid() == 0


def _package_dir() -> Path:
    import resnet_course

    return Path(resnet_course.__file__).resolve().parent


def _readonly_roots(course_root: Path) -> list[Path]:
    """The folders the child needs read-only: Python, the environment, the package, nothing of the course."""
    course_root = course_root.resolve()
    essential = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), _package_dir(),
                 Path(sys.executable).resolve().parent.parent}
    candidates = set(essential)
    for entry in sys.path:  # site-packages outside the prefixes (never the script's folder)
        if entry and Path(entry).name in ("site-packages", "dist-packages") and Path(entry).is_dir():
            candidates.add(Path(entry).resolve())
    roots: list[Path] = []
    for path in sorted(candidates, key=lambda p: len(p.parts)):
        if path.is_relative_to(Path("/usr")) or any(path.is_relative_to(root) for root in roots):
            continue
        # Never a folder holding the course root, and inside the course root only the
        # environment and the package: not gradebook.db, solutions/, submitted/, the config.
        if course_root.is_relative_to(path):
            continue
        if path.is_relative_to(course_root) and path not in essential:
            continue
        roots.append(path)
    return roots


def _system_binds() -> list[str]:
    """The system's libraries and a few harmless /etc files, read-only."""
    args: list[str] = []
    for name in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group",
                 "nsswitch.conf", "alternatives", "fonts"):
        path = Path("/etc") / name
        if path.exists():
            args += ["--ro-bind", str(path), str(path)]
    cpus = Path("/sys/devices/system/cpu")
    if cpus.is_dir():  # TensorFlow reads the CPU topology from here
        args += ["--ro-bind", str(cpus), str(cpus)]
    return args


def _bwrap_argv(command: list[str], workdir: Path, course_root: Path, env: dict[str, str]) -> list[str]:
    argv = ["bwrap", "--die-with-parent", "--new-session", "--unshare-ipc", "--unshare-pid",
            "--unshare-net", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "grading",
            "--clearenv", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            *_system_binds()]
    roots = _readonly_roots(course_root)
    # bwrap would create the folders above each mount point mode 0700 (owned by root), which the
    # sandbox user could not traverse: make them 0755 first, empty but for what is mounted.
    parents = sorted({parent for root in roots for parent in root.parents if parent != Path("/")},
                     key=lambda p: len(p.parts))
    for parent in parents:
        argv += ["--perms", "0755", "--dir", str(parent)]
    for root in roots:
        argv += ["--ro-bind", str(root), str(root)]
    argv += ["--bind", str(workdir), SANDBOX_WORKDIR, "--chdir", SANDBOX_WORKDIR]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    if _drops_privileges():
        # bwrap runs as root to build the mount namespace (it can reach /root/.pyenv and other
        # folders the sandbox user cannot), then setpriv drops to uid 65534 with no capabilities,
        # so the student's code runs as a plain unprivileged user inside it.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise SandboxError("setpriv (util-linux) is needed to drop privileges inside bubblewrap")
        argv += ["--", setpriv, f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_GID}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    else:
        argv += ["--unshare-user", "--"]
    return argv + command


def _child_env(workdir: str, limits: Limits) -> dict[str, str]:
    threads = str(max(1, limits.threads))
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": f"{workdir}/tmp",
        "KERAS_HOME": f"{workdir}/.keras",
        "MPLCONFIGDIR": f"{workdir}/.matplotlib",
        "MPLBACKEND": "Agg",
        "XDG_CACHE_HOME": f"{workdir}/.cache",
        "KERAS_BACKEND": os.environ.get("KERAS_BACKEND") or configured_backend(),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": threads,
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": threads,
        # Code that switches itself on only under nbgrader's autograde shows its real face here.
        "NBGRADER_EXECUTION": "autograde",
        "LANG": "C.UTF-8",
        # The package the grader itself uses (in the sandbox its folder holds only the package).
        "PYTHONPATH": str(_package_dir().parent),
    }


def _limits_preexec(limits: Limits, drop: bool):
    """The child's pre-exec hook: limits, and (plain mode as root) the unprivileged user."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if drop:
            os.setgroups([])
            os.setresgid(SANDBOX_GID, SANDBOX_GID, SANDBOX_GID)
            os.setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)

    return apply


def plain_mode_problem() -> str | None:
    """Why the plain mode can't run here (the sandbox user can't start this Python), or None."""
    try:
        done = subprocess.run([sys.executable, "-c", "import resnet_course"], capture_output=True, timeout=120,
                              cwd="/", preexec_fn=_limits_preexec(Limits(), drop=_drops_privileges()))
    except OSError as error:
        done = None
        detail = str(error)
    if done is not None:
        if done.returncode == 0:
            return None
        detail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        detail = detail[0]
    return (f"the sandbox user (uid {SANDBOX_UID}) cannot run {sys.executable} with resnet_course ({detail}). "
            "Install bubblewrap (apt install bubblewrap), which mounts the environment for it, or put the "
            "virtual environment and the package where other users may read them")


def prepare_workdir(workdir: Path) -> None:
    """The child's only writable folder, owned by the sandbox user when it is a different user."""
    for sub in ("tmp", ".keras", ".matplotlib", ".cache", "out"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    if _drops_privileges():
        for path in [workdir, *workdir.rglob("*")]:
            os.chown(path, SANDBOX_UID, SANDBOX_GID)
    os.chmod(workdir, 0o700)


def _become_subreaper() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _orphans_of(pid: int, skip: set[int]) -> list[int]:
    """Processes whose parent is ``pid`` (orphans re-parented to a subreaper)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _sweep_orphans(live: set[int]) -> list[int]:
    """Kill what the child left behind and was re-parented to us; repeat until none is left."""
    killed: list[int] = []
    for _ in range(50):
        orphans = _orphans_of(os.getpid(), live)
        if not orphans:
            break
        for pid in orphans:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError, PermissionError):
                pass
            killed.append(pid)
    return killed


def run_in_sandbox(args: list[str], workdir: Path, course_root: Path, limits: Limits,
                   mode: str | None = None) -> SandboxResult:
    """Run ``python ARGS`` (paths relative to ``workdir``) in a fresh sandboxed child.

    ``course_root`` is never mounted into the bubblewrap sandbox. Returns how the child ended;
    never raises for anything the child does (crash, timeout, limit, signal).
    """
    mode = mode or available_mode()
    workdir = workdir.resolve()
    prepare_workdir(workdir)
    inside = SANDBOX_WORKDIR if mode == "bwrap" else str(workdir)
    env = _child_env(inside, limits)
    command = [sys.executable, *args]
    if mode == "bwrap":
        argv = _bwrap_argv(command, workdir, course_root, env)
        popen_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        preexec = _limits_preexec(limits, drop=False)
    else:
        argv, popen_env = command, env
        preexec = _limits_preexec(limits, drop=_drops_privileges())
        _become_subreaper()
    log_path = workdir / "child.log"
    started = time.monotonic()
    reason = None
    with open(log_path, "wb") as log:
        if _drops_privileges():
            os.chown(log_path, 0, 0)
        # The log file is opened here, by the trusted side, and handed over as stdout: the
        # child's output is kept for the instructor's eyes only, never put into feedback.
        try:
            process = subprocess.Popen(argv, cwd=workdir, env=popen_env, stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                       preexec_fn=preexec, close_fds=True)
        except OSError as error:
            raise SandboxError(f"could not start the sandboxed child ({mode} mode): {error}") from error
        try:
            process.wait(timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            reason = f"timed out after {limits.wall_seconds:.0f} s"
        finally:  # also on Ctrl-C: nothing of the child outlives this call
            _kill_group(process.pid)
            process.kill()
            process.wait()
    killed = _sweep_orphans({process.pid}) if mode == "plain" else []
    seconds = time.monotonic() - started
    code = process.returncode
    if reason is None and code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        reason = f"killed by {name}" + (" (memory limit?)" if -code == signal.SIGKILL else "")
    return SandboxResult(code, reason, seconds, mode, _tail(log_path), killed)


def _tail(path: Path, size: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - size))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""
