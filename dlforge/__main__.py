from dlforge.cli import main

main()
