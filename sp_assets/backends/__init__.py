"""Model and image backends: ``base`` holds the interfaces, ``registry`` maps a profile to its implementation."""
