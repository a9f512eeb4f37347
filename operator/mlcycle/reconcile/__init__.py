"""Per kind: observe -> plan -> apply -> write status."""
