"""A kubelet stand-in for a machine without a container runtime: it registers a Node and
runs the pods bound to it as local processes (see `agent` for how, `podspec` for the rules)."""

from mlcycle.dev.nodeagent.command import main

__all__ = ["main"]
