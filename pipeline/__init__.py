"""Entry points: one module per job or command, each with ``main(argv)``; ``cli`` dispatches."""
