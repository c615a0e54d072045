"""Subcommands of the `dm1` CLI: each module defines `register(subparsers)`."""
