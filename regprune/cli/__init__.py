"""The command line: `regprune` and its subcommands."""
