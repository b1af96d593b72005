"""What the tests run against: servers, emulators, generated registries and clusters."""
