"""Pipeline steps 4 and 5, plan and apply: the live hosts read and compared with the render, and converged to it
with pyinfra (default) or Ansible; day-2 operations on the database over SSH."""
