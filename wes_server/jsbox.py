"""CWL JavaScript expressions in an OS sandbox.

cwltool hands every expression to node's ``vm.runInNewContext``, which is no security
boundary (``globalThis`` reaches ``process`` and ``require``). The boundary here is the OS:
node runs under bubblewrap with

* every namespace unshared (``--unshare-all``: no network, own pid/ipc/uts/user namespaces),
  uid/gid 65534 inside, and the real uid 65534 outside when the worker runs as root;
* a root file system holding only the node binary and the shared libraries it links,
  read-only; no ``/proc`` at all (the host's nor its own: it also runs nested inside the
  engine sandbox, where a new procfs cannot be mounted), a minimal ``/dev``, an empty tmpfs
  ``/tmp``; no data directory, no environment (``--clearenv``);
* a seccomp filter (passed to bwrap) that refuses process creation: ``fork``/``vfork``,
  ``clone`` without ``CLONE_THREAD`` and ``clone3`` fail, so ``child_process`` cannot start
  anything (threads still work);
* rlimits: address space, CPU seconds, no core files; node's own heap limit; a wall-clock
  limit per evaluation; ``--die-with-parent`` so nothing outlives the worker.

``SandboxedNodeEngine`` is cwl-utils' ``JSEngine`` extension point (``set_js_engine``), so
both expression evaluation and cwltool's expression validation go through it.
"""

from __future__ import annotations

import os
import platform
import resource
import selectors
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

from cwl_utils.errors import JavascriptException
from cwl_utils.sandboxjs import NodeJSEngine, set_js_engine

from helixgate.errors import ConfigurationError

_FINISHED = "r1cepzbhUTxtykz5XTC4\n"
NOBODY = 65534
CPU_SECONDS = 600  # per sandboxed node process (it is recycled long before)
RECYCLE_AFTER = 2000  # evaluations per sandboxed node process
ADDRESS_SPACE = 8 * 1024**3  # virtual: V8 reserves much more than it uses

# ------------------------------------------------------------------ seccomp (classic BPF)
_LD_W_ABS, _JEQ, _JSET, _JGE, _RET = 0x20, 0x15, 0x45, 0x35, 0x06
_ALLOW, _KILL = 0x7FFF0000, 0x80000000
_EPERM, _ENOSYS = 0x00050000 | 1, 0x00050000 | 38
_CLONE_THREAD = 0x00010000
# arch -> (AUDIT_ARCH, fork, vfork, clone, clone3); -1: the call does not exist there
_ARCHES = {
    "x86_64": (0xC000003E, 57, 58, 56, 435),
    "aarch64": (0xC00000B7, -1, -1, 220, 435),
}


def seccomp_program(machine: str | None = None) -> bytes:
    """A BPF program refusing process creation (threads allowed); other architectures and
    the x32 ABI are killed."""
    arch, fork, vfork, clone, clone3 = _ARCHES[machine or platform.machine()]
    prog: list[tuple[int, int, int, int]] = []

    def op(code: int, jt: int = 0, jf: int = 0, k: int = 0) -> None:
        prog.append((code, jt, jf, k))

    op(_LD_W_ABS, k=4)  # seccomp_data.arch
    op(_JEQ, 1, 0, arch)
    op(_RET, k=_KILL)
    op(_LD_W_ABS, k=0)  # seccomp_data.nr
    op(_JGE, 0, 1, 0x40000000)  # x32 syscalls
    op(_RET, k=_KILL)
    for nr in (fork, vfork):
        if nr >= 0:
            op(_JEQ, 0, 1, nr)
            op(_RET, k=_EPERM)
    op(_JEQ, 0, 1, clone3)
    op(_RET, k=_ENOSYS)  # glibc falls back to clone() for threads
    op(_JEQ, 1, 0, clone)
    op(_RET, k=_ALLOW)
    op(_LD_W_ABS, k=16)  # low 32 bits of args[0]: the clone flags
    op(_JSET, 0, 1, _CLONE_THREAD)
    op(_RET, k=_ALLOW)
    op(_RET, k=_EPERM)
    return b"".join(struct.pack("=HBBI", *i) for i in prog)


# ------------------------------------------------------------------ availability
def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise ConfigurationError(
            f"CWL expressions need {name!r} on PATH (the sandboxed JavaScript engine); "
            "install it (scripts/install.sh installs nodejs and bubblewrap)"
        )
    return os.path.realpath(path)


def _libraries(binary: str) -> list[str]:
    """The shared objects ``binary`` links (ldd), including the dynamic loader."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30, check=False)  # noqa: S603,S607
    libs: list[str] = []
    for line in out.stdout.splitlines():
        parts = line.split()
        for p in parts:
            if p.startswith("/") and os.path.exists(p):
                libs.append(p)
    return sorted(set(libs))


def _uid_mapped(uid: int) -> bool:
    """Whether ``uid`` exists in this process's user namespace (``/proc/self/uid_map``)."""
    try:
        lines = Path("/proc/self/uid_map").read_text().splitlines()
    except OSError:
        return True
    for line in lines:
        inside, _outside, count = (int(x) for x in line.split())
        if inside <= uid < inside + count:
            return True
    return False


class SandboxedNodeEngine(NodeJSEngine):
    """cwl-utils' node engine, each node process inside bubblewrap (see module doc)."""

    def __init__(self, *, time_limit: float = 20.0, heap_mib: int = 256) -> None:
        super().__init__()
        self.node = _tool("node")
        self.bwrap = _tool("bwrap")
        self.time_limit = time_limit
        self.heap_mib = heap_mib
        self.libs = _libraries(self.node)
        self._seccomp = seccomp_program()
        self._local = threading.local()
        # root that can become nobody: not so in the user namespace of a sandboxed worker
        # process (`serve all`), where only its own uid is mapped and bwrap nests namespaces
        self._drop_root = os.geteuid() == 0 and _uid_mapped(NOBODY)

    # -- process
    def command(self, seccomp_fd: int) -> list[str]:
        cmd = [
            self.bwrap,
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--uid", str(NOBODY),
            "--gid", str(NOBODY),
            "--cap-drop", "ALL",
        ]  # fmt: skip
        for link in ("/lib", "/lib64", "/bin"):  # merged-/usr layouts
            if os.path.islink(link):
                cmd += ["--symlink", os.readlink(link), link]
        cmd += ["--ro-bind", self.node, "/usr/bin/node"]
        for lib in self.libs:  # each at its canonical directory, under the name the loader asks for
            where = os.path.join(os.path.realpath(os.path.dirname(lib)), os.path.basename(lib))
            cmd += ["--ro-bind", os.path.realpath(lib), where]
        cmd += [
            "--dev", "/dev",
            "--tmpfs", "/tmp",  # noqa: S108 - inside the sandbox (its own empty tmpfs)
            "--chdir", "/tmp",  # noqa: S108
            "--seccomp", str(seccomp_fd),
            "/usr/bin/node",
            f"--max-old-space-size={self.heap_mib}",
            "--max-semi-space-size=16",
        ]  # fmt: skip
        return cmd

    def _limits(self) -> None:  # runs in the child between fork and exec
        if self._drop_root:
            # a root worker: the sandbox runs as the real unprivileged uid (bwrap then builds
            # its namespaces unprivileged), not as root mapped into a user namespace
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
        resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    def new_js_proc(self, js_text: str, force_docker_pull: bool = False, container_engine: str = "docker") -> Any:
        with tempfile.TemporaryFile() as prog:
            prog.write(self._seccomp)
            prog.flush()
            prog.seek(0)
            fd = prog.fileno()
            proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [*self.command(fd), "--eval", js_text],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(fd,),
                env={},
                close_fds=True,
                preexec_fn=self._limits,  # noqa: PLW1509 - only setrlimit before exec
            )
        self.processes_to_kill.append(proc)  # type: ignore[arg-type]  # bytes pipes: we read them raw
        return proc

    # -- one evaluation
    def exec_js_process(
        self,
        js_text: str,
        timeout: float | None = None,
        js_console: bool = False,
        context: str | None = None,
        force_docker_pull: bool = False,
        container_engine: str = "docker",
    ) -> tuple[int, str, str]:
        engine = "cwlNodeEngineWithContext.js" if context is not None else "cwlNodeEngine.js"
        procs: dict[Any, Any] = getattr(self._local, "procs", None) or {}
        self._local.procs = procs
        key = (engine, context)
        proc, uses = procs.get(key, (None, 0))
        stdin = ""
        if proc is None or proc.poll() is not None or uses >= RECYCLE_AFTER:
            if proc is not None:
                _stop(proc)
            proc = self.new_js_proc(files("cwl_utils").joinpath(engine).read_text("utf-8"))
            uses = 0
            if context is not None:
                import json

                stdin = json.dumps(context) + "\n"
        import json

        stdin += json.dumps(js_text) + "\n"
        limit = min(float(timeout or self.time_limit), self.time_limit)
        rc, out, err = _exchange(proc, stdin.encode(), limit)
        if rc != 0:
            procs.pop(key, None)
            _stop(proc)
        else:
            procs[key] = (proc, uses + 1)
        return rc, out, err

    def eval(  # type: ignore[override]  # same call, the time limit defaults to the sandbox's
        self, scan: str, jslib: str = "", timeout: float | None = None, **kwargs: Any
    ) -> Any:
        try:
            return super().eval(scan, jslib, timeout=timeout or self.time_limit, **kwargs)
        except JavascriptException as exc:
            raise JavascriptException(_explain(str(exc), self)) from None


def _explain(message: str, engine: SandboxedNodeEngine) -> str:
    if "__HG_TIMEOUT__" in message:
        return f"expression exceeded its time limit ({engine.time_limit:g} s) and was stopped"
    if "__HG_MEMORY__" in message or "heap out of memory" in message or "Reached heap limit" in message:
        return f"expression exceeded its memory limit ({engine.heap_mib} MiB heap) and was stopped"
    if "__HG_DIED__" in message:
        return "the expression sandbox ended unexpectedly (resource limit)"
    return message


def _exchange(proc: Any, data: bytes, limit: float) -> tuple[int, str, str]:
    """Write one request; read both streams up to the end marker, EOF or the time limit."""
    out, err = bytearray(), bytearray()
    marker = _FINISHED.encode()
    deadline = time.monotonic() + limit
    sel = selectors.DefaultSelector()
    try:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        sel.register(proc.stdin, selectors.EVENT_WRITE, None)
        pending = memoryview(data)
        open_streams = 2
        while not (out.endswith(marker) and err.endswith(marker)):
            left = deadline - time.monotonic()
            if left <= 0:
                return -1, "", "__HG_TIMEOUT__"
            if open_streams == 0:
                return -1, "", "__HG_MEMORY__" if b"heap" in err else "__HG_DIED__"
            for key, _ in sel.select(min(left, 1.0)):
                if key.data is None:
                    try:
                        n = os.write(proc.stdin.fileno(), pending)
                    except (BrokenPipeError, BlockingIOError):
                        n = len(pending)
                    pending = pending[n:]
                    if not pending:
                        sel.unregister(proc.stdin)
                    continue
                chunk = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                key.data.extend(chunk)
                if len(key.data) > 64 * 1024**2:
                    return -1, "", "__HG_MEMORY__"
    finally:
        sel.close()
    n = len(marker) + 1
    return 0, out[:-n].decode("utf-8", "replace"), err[:-n].decode("utf-8", "replace")


def _stop(proc: Any) -> None:
    try:
        proc.kill()
        proc.wait(5)
    except (OSError, subprocess.TimeoutExpired):
        pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            stream.close()
        except OSError:
            pass


_installed: SandboxedNodeEngine | None = None
_install_lock = threading.Lock()


def install(settings: Any) -> SandboxedNodeEngine:
    """Make the sandboxed engine cwl-utils' engine for this process (idempotent); verify
    that it works. Raises ConfigurationError naming what is missing."""
    global _installed
    with _install_lock:
        if _installed is None:
            engine = SandboxedNodeEngine(
                time_limit=float(settings.expression_time_limit), heap_mib=int(settings.expression_memory_mib)
            )
            rc, out, err = engine.exec_js_process(
                '"use strict";(function(){return 6*7;})()', timeout=max(10.0, engine.time_limit)
            )
            if rc != 0 or out.strip() != "42":
                raise ConfigurationError(
                    "the CWL expression sandbox does not work (bubblewrap + node): "
                    f"exit {rc}: {(err or out).strip()[:300]}"
                )
            set_js_engine(engine)
            _installed = engine
        return _installed
