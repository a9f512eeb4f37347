"""The mlcycle API: pydantic models that are the single source of the CRD schemas.

Every field a user can write is defined once, in a versioned package such as `v1alpha1`,
and so is every condition type and reason the operator reports; `crdgen` turns the models
into the CustomResourceDefinitions in `crds/`, `troubleshooting` the reasons into the
README's table.
"""
