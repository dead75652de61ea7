from tomrepro.cli import run

run()
