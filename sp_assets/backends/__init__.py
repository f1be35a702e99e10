"""Model and image backends. Each role has a small interface in ``base``; profiles pick one."""
