"""Pipeline step 6, verify: testinfra checks derived from the render, run against the live hosts."""
