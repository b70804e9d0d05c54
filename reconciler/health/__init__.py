"""Backend health: active checks, their scheduling, and the pure selection of SPEC.md section 3."""
