"""Search spaces, reference networks, key enumeration, device profiles and the build CLI."""
