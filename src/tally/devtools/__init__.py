"""Developer tools: local emulators of external services, used by the CLI and the tests."""
