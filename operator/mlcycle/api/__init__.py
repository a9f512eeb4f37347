"""The mlcycle API: pydantic models that are the single source of the CRD schemas.

Every field a user can write is defined once, in a versioned package such as `v1alpha1`;
`crdgen` turns those models into the CustomResourceDefinitions in `crds/`.
"""
