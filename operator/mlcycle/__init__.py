"""mlcycle: a Kubernetes operator for the ML lifecycle, with its data plane and local stack."""
