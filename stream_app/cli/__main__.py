"""`python -m stream_app.cli`: the same as `churnwatch`."""

from stream_app.cli.main import main

main()
