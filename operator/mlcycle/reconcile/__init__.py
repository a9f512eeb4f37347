"""Per kind: observe -> plan -> apply -> write status; beside them what every kind shares
(the per-object memory, the status write, the apply of children, the outcome)."""
