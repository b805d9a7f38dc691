"""What a sandboxed run may use: one typed config shared by every caller of the sandbox.

    from environments.sandbox import SandboxLimits
    SandboxLimits(wall_s=2, memory_mb=256)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SandboxLimits(BaseModel):
    """Limits of one sandboxed process. Defaults suit checking a short function against a few dozen cases."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wall_s: float = Field(default=5.0, gt=0, le=600, description="Wall-clock seconds the code may run (from the jail being ready) before the whole process group is killed.")
    startup_s: float = Field(default=60.0, gt=0, le=600, description="Seconds the interpreter and the jail may take to get ready (not the code's time: a loaded machine must not fail a right answer).")
    cpu_s: int = Field(default=3, ge=1, le=600, description="CPU seconds (RLIMIT_CPU; SIGKILL one second after).")
    memory_mb: int = Field(default=512, ge=64, le=65536, description="Address space in MiB (RLIMIT_AS).")
    file_size_mb: int = Field(default=4, ge=0, le=1024, description="Largest file the code may write (RLIMIT_FSIZE).")
    disk_mb: int = Field(default=16, ge=1, le=4096, description="Size of the private tmpfs (cwd and /tmp) where mounts are available.")
    open_files: int = Field(default=64, ge=16, le=4096, description="Open file descriptors (RLIMIT_NOFILE).")
    processes: int = Field(default=8, ge=1, le=4096, description="Processes and threads of the sandbox's uid (RLIMIT_NPROC).")
    output_bytes: int = Field(default=64_000, ge=1024, le=1 << 26, description="Captured stdout/stderr each; more kills the run.")
    result_bytes: int = Field(default=1 << 20, ge=1024, le=1 << 28, description="Structured results; more kills the run.")
    network: bool = Field(default=False, description="False: a new network namespace with no usable interface.")
    audit_hook: bool = Field(default=True, description="Install the Python audit hook (defense in depth) before untrusted code runs.")
    namespaces: bool = Field(default=True, description="Use mount/network namespaces where the kernel allows (turn off only to test the fallback).")

    @model_validator(mode="after")
    def _cpu_within_wall(self) -> SandboxLimits:
        if self.cpu_s > self.wall_s + 60:
            raise ValueError(f"cpu_s={self.cpu_s} is far above wall_s={self.wall_s}: the wall clock would always fire first; lower cpu_s")
        return self

    def rlimits(self) -> dict[str, int]:
        mib = 1 << 20
        return {
            "cpu": self.cpu_s, "address_space": self.memory_mb * mib, "file_size": self.file_size_mb * mib,
            "open_files": self.open_files, "processes": self.processes, "core": 0,
        }
