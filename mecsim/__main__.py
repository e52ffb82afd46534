from mecsim.cli import main

main()
