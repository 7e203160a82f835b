"""Pipeline step 1, validate: the region spec loaded with positions, checked by schemas/, and its vault of secrets."""
