"""One module per `recorder` subcommand (see `recorder.cli.COMMANDS`)."""
