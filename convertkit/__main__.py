from convertkit.cli import main

main()
