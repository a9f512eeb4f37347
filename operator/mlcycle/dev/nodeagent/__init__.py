"""A kubelet stand-in for a machine without a container runtime: it registers a Node and
runs the pods bound to it as local processes.

Laid out along the kubelet's seams: `agent` (the sync loop), `nodestatus` (the Node and
its Lease), `kubeclient` (the calls to the apiserver), `podworker` (the interface of what
runs one pod) with `processworker`, `containers`, `containerenv`, `probemanager`,
`probes`, `process` and `volumes` behind it, `statusmanager` (writing pod status) and
`ipam` (pod IPs). The rules are pure: `podspec`, `envvars`, `exits`, `containerstatus`,
`podstatus`, `quantity`, `timestamps`.
"""

from mlcycle.dev.nodeagent.command import main

__all__ = ["main"]
