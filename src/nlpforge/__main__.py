"""`python -m nlpforge` is the `nlpforge` command."""
from nlpforge.cli import main

main()
