"""The region's own keys: its certificate authority, host certificates, the deploy SSH key, the bundle signing key."""
