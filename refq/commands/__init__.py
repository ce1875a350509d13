"""Command-line subcommands. Each module here defines `register(subparsers)`; `refq.cli` finds them."""
