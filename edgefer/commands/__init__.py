"""CLI subcommands of the runtime (imported lazily by edgefer.cli)."""
