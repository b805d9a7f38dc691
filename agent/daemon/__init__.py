"""The long-running self-improvement daemon: collect → train → evaluate → gate → promote, crash-safe.

    selfevolve daemon --workspace ws --config docker/daemon.toml     # foreground; SIGTERM/SIGINT stop it
    selfevolve status --workspace ws [--json]
    selfevolve stop --workspace ws

Modules: ``config`` (the validated TOML schema), ``loop`` (the ``Daemon`` cycle state machine), its
phase mixins ``collect``, ``training``, ``gate`` and ``state`` (state.json, budgets, history),
``control`` (lock, pid, state file, stop request, log), and pure functions for ``curriculum``
(HS-STaR), ``monitors`` (B-STaR) and ``tripwires`` (SRT). See docs/daemon.md.
"""

from agent.daemon.config import ConfigError, DaemonConfig, load_config, parse_config

__all__ = ["ConfigError", "DaemonConfig", "load_config", "parse_config"]
