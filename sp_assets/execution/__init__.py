"""The worker-pool seam and the per-item work of the heavy stages (judge, write, edit, verify, guard, embed)."""
