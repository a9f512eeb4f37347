"""kopf registrations only: each handler turns the body into a typed object and delegates."""
